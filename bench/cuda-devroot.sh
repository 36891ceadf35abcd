#!/usr/bin/env bash
# cuda-devroot.sh - gather what building and testing expertd needs beyond the lent GPU
# machine's image into .devroot/ (ignored by git), so that the device tool can carry it there.
# That image has nvcc, CMake and a C compiler but none of our libraries, and it cannot fetch
# anything: this copies them from this Debian machine's packages.
#   .devroot/sysroot   headers, .pc files and link libraries of libuv, jansson, liburing and
#                      criterion (pkg-config finds them through PKG_CONFIG_SYSROOT_DIR)
#   .devroot/runtime   their shared libraries and everything those load, glibc excepted; the
#                      build gives its programs an RPATH here (DT_RPATH, so it also covers what
#                      libcriterion loads in turn)
#   .devroot/llhttp    llhttp's C sources and header (node-llhttp)
#   .devroot/bin       pkg-config (pkgconf and a wrapper that points it at the sysroot)
#   .devroot/env.sh    sourced by bench/cuda.sh: PKG_CONFIG and XD_DEVROOT_CMAKE_ARGS
#
#   bash bench/cuda-devroot.sh        here, once (about 12 MB; installs missing packages)
#   device run: carry [".devroot"], command "bash bench/cuda.sh build test -o $OUT"
set -euo pipefail
cd "$(dirname "$0")/.."
D=.devroot
PKGS="libuv1 libuv1-dev libjansson4 libjansson-dev liburing2 liburing-dev libcriterion3
      libcriterion-dev node-llhttp pkgconf"
missing=
for p in $PKGS; do dpkg -s "$p" > /dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing$missing"
  # shellcheck disable=SC2086  # one word per package
  apt-get install -y --no-install-recommends $missing > /dev/null
fi
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.devroot/' "$exclude" 2> /dev/null || echo '/.devroot/' >> "$exclude"

rm -rf "$D"
mkdir -p "$D/sysroot" "$D/runtime" "$D/llhttp/src" "$D/llhttp/include" "$D/bin"
# headers, .pc files and libraries of the -dev packages and their runtime packages
for p in libuv1 libuv1-dev libjansson4 libjansson-dev liburing2 liburing-dev libcriterion3 \
  libcriterion-dev; do
  dpkg -L "$p" | while read -r f; do
    case $f in /usr/include/* | /usr/lib/*) ;; *) continue ;; esac
    if [ -f "$f" ] || [ -L "$f" ]; then
      mkdir -p "$D/sysroot$(dirname "$f")"
      cp -P "$f" "$D/sysroot$f"
    fi
  done
done
# the .pc files that criterion.pc requires, in turn (pkg-config checks they exist)
todo=criterion seen=
while [ -n "$todo" ]; do
  p=${todo%% *}
  [ "$p" = "$todo" ] && todo= || todo=${todo#* }
  case " $seen " in *" $p "*) continue ;; esac
  seen="$seen $p"
  pc=$(pkg-config --variable=pcfiledir "$p")/$p.pc
  [ -f "$D/sysroot$pc" ] || { mkdir -p "$D/sysroot$(dirname "$pc")"; cp "$pc" "$D/sysroot$pc"; }
  for r in $(pkg-config --print-requires --print-requires-private "$p" | awk '{print $1}'); do
    todo="${todo:+$todo }$r"
  done
done
# the libraries themselves and everything they load (and pkgconf), glibc's own libraries excepted
cp -L "$D"/sysroot/usr/lib/x86_64-linux-gnu/lib*.so.[0-9] "$D/runtime/"
libs=$(for l in "$D"/runtime/lib*.so.[0-9] /usr/bin/pkgconf; do ldd "$l"; done |
  awk '/=>/ {print $3}' | sort -u)
for l in $libs; do
  case $(basename "$l") in
    libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | libresolv.so.* | ld-linux*) continue ;;
  esac
  cp -L "$l" "$D/runtime/"
done
cp /usr/share/llhttp/*.c "$D/llhttp/src/"
cp /usr/share/include/llhttp/llhttp.h "$D/llhttp/include/"
cp /usr/bin/pkgconf "$D/bin/pkgconf.bin"
cat > "$D/bin/pkg-config" << 'EOF'
#!/bin/sh
# pkg-config over .devroot/sysroot: its .pc files, paths prefixed with the sysroot, /usr/include
# kept (the image's compiler does not search the sysroot by itself)
d=$(cd "$(dirname "$0")/.." && pwd)
PKG_CONFIG_SYSROOT_DIR=$d/sysroot PKG_CONFIG_LIBDIR=$d/sysroot/usr/lib/x86_64-linux-gnu/pkgconfig \
  PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1 LD_LIBRARY_PATH=$d/runtime \
  exec "$d/bin/pkgconf.bin" "$@"
EOF
chmod +x "$D/bin/pkg-config"
cat > "$D/env.sh" << 'EOF'
# sourced by bench/cuda.sh (bash) from the repository root
XD_DEVROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PKG_CONFIG=$XD_DEVROOT/bin/pkg-config
XD_DEVROOT_CMAKE_ARGS=(-DPKG_CONFIG_EXECUTABLE="$PKG_CONFIG" -DLLHTTP_ROOT="$XD_DEVROOT/llhttp"
  "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags -Wl,-rpath,$XD_DEVROOT/runtime")
EOF
echo "$D: $(du -sh "$D" | cut -f1), $(find "$D/runtime" -type f | wc -l) runtime libraries"
