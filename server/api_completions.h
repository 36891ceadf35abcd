/* api_completions.h - the completions job's side of the engine mailbox: srv.c drains the
 * engine and hands every event here (each event's user pointer is its job). */
#ifndef XD_API_COMPLETIONS_H
#define XD_API_COMPLETIONS_H

#include "engine.h"

void srv_api_completions_event(const struct xd_gen_event *ev, void *arg);

#endif
