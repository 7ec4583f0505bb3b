/* audit.c: the audit trail: every change made through the API, who made it, before and after. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/*
 * Appends one audit entry inside txn, so it commits or aborts with the
 * change it describes.  changed_by is the litellm-changed-by header when
 * an admin sends it (acting for someone), else the caller's user, else
 * "default_user_id" as LiteLLM writes for the master key.  before and
 * after are borrowed; they are records, which never hold a plaintext key.
 * KW_EINVAL for an entry deeper than KW_STORED_MAX_DEPTH, which GET /audit
 * could not read back (records are at most one level shallower).
 */
enum kw_err
kw_audit_record(struct kw_req *req, DB_TXN *txn, const char *action, const char *table,
    const char *object_id, json_object *before, json_object *after)
{
	DB *audit = kw_store_db(req->store, KW_DB_AUDIT);
	const struct kw_caller *c = req->caller;
	const char *on_behalf = kw_req_header(req, "HTTP_LITELLM_CHANGED_BY");
	json_object *entry = json_object_new_object();
	db_recno_t recno = 0;
	DBT key = { .data = &recno, .ulen = sizeof(recno), .flags = DB_DBT_USERMEM };
	DBT val = { 0 };
	enum kw_err rc;

	kw_json_set_time(entry, "updated_at", req->now);
	if (c == NULL || !kw_auth_is_admin(c) ||
	    (on_behalf != NULL && (strlen(on_behalf) > 256 ||
	    !kw_valid_utf8(on_behalf, strlen(on_behalf)))))
		on_behalf = NULL;	/* only an admin acts on someone's behalf, named in text */
	json_object_object_add(entry, "changed_by", json_object_new_string(
	    on_behalf != NULL && *on_behalf != '\0' ? on_behalf :
	    c != NULL && c->user_id[0] != '\0' ? c->user_id : "default_user_id"));
	json_object_object_add(entry, "changed_by_api_key", c != NULL && c->token[0] != '\0' ?
	    json_object_new_string(c->token) : NULL);
	json_object_object_add(entry, "action", json_object_new_string(action));
	json_object_object_add(entry, "table_name", json_object_new_string(table));
	json_object_object_add(entry, "object_id", json_object_new_string(object_id));
	json_object_object_add(entry, "before_value", json_object_get(before));
	json_object_object_add(entry, "updated_values", json_object_get(after));
	if (kw_json_depth(entry) > KW_STORED_MAX_DEPTH) {
		kw_log_error("audit: refused an entry nested deeper than %d levels",
		    KW_STORED_MAX_DEPTH);
		json_object_put(entry);
		return KW_EINVAL;
	}
	val.data = (void *)json_object_to_json_string_ext(entry, JSON_C_TO_STRING_PLAIN);
	val.size = (u_int32_t)strlen(val.data);
	rc = kw_store_err(audit->put(audit, txn, &key, &val, DB_APPEND));
	json_object_put(entry);
	return rc;
}

struct audit_query {
	const char *object_id, *table, *action, *changed_by;
	size_t offset, limit;
	size_t total;
	json_object *page;	/* owned; rebuilt on each attempt */
};

static int
matches(json_object *entry, const char *field, const char *want)
{
	const char *have = kw_json_str(entry, field);

	return want == NULL || (have != NULL && strcmp(have, want) == 0);
}

/* Walks the log newest first, counting matches and keeping the requested page. */
static enum kw_err
read_audit(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct audit_query *q = baton;
	DB *audit = kw_store_db(st, KW_DB_AUDIT);
	db_recno_t recno;
	DBT key = { .data = &recno, .ulen = sizeof(recno), .flags = DB_DBT_USERMEM };
	DBT val = { .flags = DB_DBT_REALLOC };
	DBC *cur;
	enum kw_err rc;

	json_object_put(q->page);
	q->page = json_object_new_array();
	q->total = 0;
	if ((rc = kw_store_err(audit->cursor(audit, txn, &cur, 0))) != KW_OK)
		return rc;
	while ((rc = kw_store_err(cur->get(cur, &key, &val, DB_PREV))) == KW_OK) {
		json_object *entry;
		char id[24];

		if ((rc = kw_rec_parse(val.data, val.size, &entry)) != KW_OK)
			break;
		if (matches(entry, "object_id", q->object_id) && matches(entry, "table_name", q->table) &&
		    matches(entry, "action", q->action) && matches(entry, "changed_by", q->changed_by)) {
			if (q->total >= q->offset && q->total < q->offset + q->limit) {
				snprintf(id, sizeof(id), "%lu", (unsigned long)recno);
				json_object_object_add(entry, "id", json_object_new_string(id));
				json_object_array_add(q->page, json_object_get(entry));
			}
			q->total++;
		}
		json_object_put(entry);
	}
	cur->close(cur);
	free(val.data);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/*
 * GET /audit: the audit log, newest first, filtered by object_id,
 * table_name, action and changed_by.  Admins and admin viewers only.  A
 * scan of the log: audit reads are rare and the log is append-only.
 */
enum kw_err
kw_op_audit_list(struct kw_req *req, struct kw_resp *resp)
{
	struct audit_query q = { 0 };
	json_object *body;
	int64_t page = 1, size = 50;
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if (!kw_auth_reads_all(req->caller)) {
		kw_error_set(&req->err, KW_EFORBIDDEN, NULL, "only admins read the audit log");
		return KW_EFORBIDDEN;
	}
	if (kw_json_has(req->query, "page"))
		page = (int64_t)kw_json_num(req->query, "page", 1);
	if (kw_json_has(req->query, "page_size"))
		size = (int64_t)kw_json_num(req->query, "page_size", 50);
	q.object_id = kw_json_str(req->query, "object_id");
	q.table = kw_json_str(req->query, "table_name");
	q.action = kw_json_str(req->query, "action");
	q.changed_by = kw_json_str(req->query, "changed_by");
	q.offset = (size_t)((page - 1) * size);
	q.limit = (size_t)size;
	if ((rc = kw_store_txn(req->store, read_audit, &q)) != KW_OK) {
		json_object_put(q.page);
		return rc;
	}
	body = json_object_new_object();
	json_object_object_add(body, "audit_logs", q.page);
	json_object_object_add(body, "total", json_object_new_int64((int64_t)q.total));
	json_object_object_add(body, "page", json_object_new_int64(page));
	json_object_object_add(body, "page_size", json_object_new_int64(size));
	json_object_object_add(body, "total_pages",
	    json_object_new_int64((int64_t)((q.total + (size_t)size - 1) / (size_t)size)));
	kw_resp_json(resp, 200, body);
	return KW_OK;
}
