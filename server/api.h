/* api.h - the endpoint handlers named by the route table (router.c). Each is called on the loop
 * thread with a complete request and must end it with exactly one srv_conn_respond* or
 * srv_conn_stream_end, now or later. */
#ifndef XD_API_H
#define XD_API_H

#include "http_parse.h"

struct srv_conn;

/* api_completions.c */
void srv_api_completions(struct srv_conn *c, const struct srv_http_req *req);
/* api_chat.c */
void srv_api_chat(struct srv_conn *c, const struct srv_http_req *req);
/* api_info.c */
void srv_api_models(struct srv_conn *c, const struct srv_http_req *req);
void srv_api_props(struct srv_conn *c, const struct srv_http_req *req);
void srv_api_health(struct srv_conn *c, const struct srv_http_req *req);
void srv_api_metrics(struct srv_conn *c, const struct srv_http_req *req);

#endif
