/* cmd.h - the subcommands of the expertd binary; each lives in server/cmd_<name>.c.
 * Each takes the arguments after its name (argv[0] is the subcommand) and returns the process
 * exit status. Errors are printed to stderr as "expertd <cmd>: <message>". */
#ifndef XD_CMD_H
#define XD_CMD_H

int xd_cmd_inspect(int argc, char **argv);
int xd_cmd_gen(int argc, char **argv);
int xd_cmd_tokenize(int argc, char **argv);
int xd_cmd_run(int argc, char **argv);
int xd_cmd_bench(int argc, char **argv);
int xd_cmd_serve(int argc, char **argv);
int xd_cmd_pack(int argc, char **argv);
int xd_cmd_replay(int argc, char **argv);
int xd_cmd_template(int argc, char **argv);

#endif
