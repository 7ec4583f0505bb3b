/* service.c: the operations about the service itself: GET /health and GET /openapi.json. */
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/*
 * GET /health: 200 when the store answers a read transaction, 503 with the
 * reason when it does not (never a path or a secret in the reason).
 */
enum kw_err
kw_op_health(struct kw_req *req, struct kw_resp *resp)
{
	json_object *body = json_object_new_object(), *store = json_object_new_object();
	struct kw_store_state state;
	enum kw_err rc = req->store ? kw_store_health(req->store, &state) : KW_EUNAVAIL;

	json_object_object_add(body, "status",
	    json_object_new_string(rc == KW_OK ? "healthy" : "unhealthy"));
	json_object_object_add(body, "version", json_object_new_string(KW_VERSION));
	json_object_object_add(body, "spec_sha256", json_object_new_string(kw_gen_spec_sha256));
	if (rc == KW_OK) {
		json_object_object_add(store, "state", json_object_new_string("ok"));
		json_object_object_add(store, "schema_version",
		    json_object_new_int64(state.schema_version));
		json_object_object_add(store, "log_file", json_object_new_int64((int64_t)state.log_file));
	} else {
		json_object_object_add(store, "state", json_object_new_string("unavailable"));
		json_object_object_add(store, "error", json_object_new_string(req->store ?
		    "the store cannot be read" : "the store cannot be opened"));
	}
	json_object_object_add(body, "store", store);
	if (rc == KW_OK && kw_group_enabled())
		json_object_object_add(body, "group", kw_group_health(req->store));
	kw_resp_json(resp, rc == KW_OK ? 200 : 503, body);
	return KW_OK;
}

/* GET /openapi.json: the document the route table was generated from. */
enum kw_err
kw_op_openapi_json(struct kw_req *req, struct kw_resp *resp)
{
	(void)req;
	resp->status = 200;
	resp->raw = kw_gen_openapi_json;
	resp->raw_len = kw_gen_openapi_json_len;
	return KW_OK;
}
