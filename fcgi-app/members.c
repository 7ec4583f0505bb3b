/* members.c: who belongs to what: the members of teams and organizations, kept on both sides, and the users they are. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"

/*
 * What differs between the tables that hold members.  A team's members
 * sit in members_with_roles with a role of admin or user, and the user
 * lists the team in its teams; an organization's sit in members with a
 * user_role and a created_at, and the user names one organization in
 * organization_id.  Users hold no members: they are listed here for the
 * reads and writes the three kinds of record share.
 */
static const struct table {
	enum kw_db db;
	const char *audit;		/* the audit entries' table name */
	const char *noun;		/* in messages: "team" */
	const char *a_noun;		/* "a team", "an organization" */
	const char *id_field;		/* the record's id: "team_id" */
	const char *list;		/* the members array; NULL: holds no members */
	const char *role_field;		/* a member entry's role */
	const char *admin_role;		/* the role that manages the members */
	const char *default_role;	/* the role of a member added without one */
	int closed_roles;		/* a stored role other than admin_role reads as default_role */
	int budgeted;			/* its budget settles before each change */
	int stamped;			/* each member entry records when it was added */
	const char *manage_field;	/* the field a 403 for managing members names */
	const char *budget_field;	/* a member entry's own max budget */
	int budget_table;		/* a member entry has a budget of its own: budget_id, rpm and tpm limits */
	const char *user_side;		/* the user's field that names the record */
	int user_side_list;		/* user_side is a list of ids, not one id */
} tables[] = {
	[KW_MEMBERS_TEAMS] = {
		.db = KW_DB_TEAMS, .audit = KW_TABLE_TEAMS, .noun = "team", .a_noun = "a team",
		.id_field = "team_id", .list = "members_with_roles", .role_field = "role",
		.admin_role = "admin", .default_role = "user", .closed_roles = 1, .budgeted = 1,
		.budget_field = "max_budget_in_team", .budget_table = 1, .user_side = "teams",
		.user_side_list = 1,
	},
	[KW_MEMBERS_ORGS] = {
		.db = KW_DB_ORGS, .audit = KW_TABLE_ORGS, .noun = "organization",
		.a_noun = "an organization", .id_field = "organization_id", .list = "members",
		.role_field = "user_role", .admin_role = "org_admin", .default_role = "internal_user",
		.stamped = 1, .manage_field = "organization_id",
		.budget_field = "max_budget_in_organization", .user_side = "organization_id",
	},
	[KW_MEMBERS_USERS] = {
		.db = KW_DB_USERS, .audit = KW_TABLE_USERS, .noun = "user", .a_noun = "a user",
		.id_field = "user_id", .budgeted = 1,
	},
};

/* --- the users members are --------------------------------------------- */

/* Adds the budget and rate fields of a new team or user record to rec, unset, with spend 0. */
void
kw_members_limits_new(json_object *rec)
{
	json_object_object_add(rec, "max_budget", NULL);
	json_object_object_add(rec, "soft_budget", NULL);
	json_object_object_add(rec, "spend", json_object_new_double(0));
	json_object_object_add(rec, "budget_duration", NULL);
	json_object_object_add(rec, "budget_reset_at", NULL);
	json_object_object_add(rec, "tpm_limit", NULL);
	json_object_object_add(rec, "rpm_limit", NULL);
	json_object_object_add(rec, "max_parallel_requests", NULL);
}

/* The value a team's or user's setting sent as null takes (owned); NULL when null is its value. */
static json_object *
setting_default(const char *field)
{
	if (strcmp(field, "models") == 0)
		return json_object_new_array();
	if (strcmp(field, "metadata") == 0)
		return json_object_new_object();
	if (strcmp(field, "blocked") == 0)
		return json_object_new_boolean(0);
	if (strcmp(field, "user_role") == 0)
		return json_object_new_string("internal_user");
	if (strcmp(field, "spend") == 0)
		return json_object_new_double(0);
	return NULL;
}

void
kw_members_apply(struct kw_req *req, json_object *rec, json_object *body,
    const char *const *fields, size_t n, const char *skip)
{
	const char *d;

	for (size_t i = 0; i < n; i++) {
		json_object *v;

		if (!json_object_object_get_ex(body, fields[i], &v) ||
		    (skip != NULL && strcmp(fields[i], skip) == 0))
			continue;
		json_object_object_add(rec, fields[i],
		    v != NULL ? json_object_get(v) : setting_default(fields[i]));
	}
	if (kw_json_has(body, "budget_duration")) {
		d = kw_json_str(body, "budget_duration");
		kw_json_set_time(rec, "budget_reset_at", d != NULL ? kw_time_budget_reset(d, req->now) : 0);
	}
}

/*
 * A new user record (owned) with every field at its default: role
 * internal_user, no teams, no models (no restriction), spend 0.  The
 * caller sets the rest and stores it.
 */
json_object *
kw_members_user_new(struct kw_req *req, const char *user_id, const char *user_email)
{
	json_object *rec = json_object_new_object();

	json_object_object_add(rec, "user_id", json_object_new_string(user_id));
	json_object_object_add(rec, "user_email",
	    user_email != NULL ? json_object_new_string(user_email) : NULL);
	json_object_object_add(rec, "user_alias", NULL);
	json_object_object_add(rec, "user_role", json_object_new_string("internal_user"));
	json_object_object_add(rec, "teams", json_object_new_array());
	json_object_object_add(rec, "organization_id", NULL);
	json_object_object_add(rec, "models", json_object_new_array());
	kw_members_limits_new(rec);
	json_object_object_add(rec, "metadata", json_object_new_object());
	json_object_object_add(rec, "blocked", json_object_new_boolean(0));
	kw_json_set_time(rec, "created_at", req->now);
	kw_json_set_time(rec, "updated_at", req->now);
	return rec;
}

struct email_search {
	const char *email;
	json_object *found;	/* owned: the user_id string of the match */
};

/* Stops at the first user whose user_email matches, keeping its id. */
static int
match_email(const char *id, json_object *rec, void *baton)
{
	struct email_search *s = baton;
	const char *email = kw_json_str(rec, "user_email");

	if (email == NULL || strcasecmp(email, s->email) != 0)
		return 0;
	s->found = json_object_new_string(id);
	return 1;
}

/*
 * Finds the user whose user_email is email (ASCII case ignored), the
 * first in user_id order; *user_id is request-owned (arena).  A scan of
 * the users: KW_ENOTFOUND, without touching req->err, when none has it.
 */
enum kw_err
kw_members_user_by_email(struct kw_req *req, DB_TXN *txn, const char *email, const char **user_id)
{
	struct email_search s = { .email = email };
	enum kw_err rc = kw_rec_each(req->store, txn, KW_DB_USERS, match_email, &s);

	*user_id = NULL;
	if (rc == KW_OK && s.found == NULL)
		rc = KW_ENOTFOUND;
	if (rc == KW_OK && (*user_id = kw_arena_strndup(req->arena, json_object_get_string(s.found),
	    (size_t)json_object_get_string_len(s.found))) == NULL)
		rc = KW_ENOMEM;
	json_object_put(s.found);
	return rc;
}

/*
 * KW_OK when no user other than self (NULL: any) has email (NULL: none):
 * emails name users in membership, so they stay unique.  400 naming field
 * otherwise.
 */
enum kw_err
kw_members_email_free(struct kw_req *req, DB_TXN *txn, const char *email, const char *self,
    const char *field)
{
	const char *other;
	enum kw_err rc;

	if (email == NULL)
		return KW_OK;
	rc = kw_members_user_by_email(req, txn, email, &other);
	if (rc == KW_ENOTFOUND || (rc == KW_OK && self != NULL && strcmp(other, self) == 0))
		return KW_OK;
	if (rc != KW_OK)
		return rc;
	kw_error_set(&req->err, KW_ECONFLICT, field, "another user has this user_email");
	return KW_ECONFLICT;
}

/* --- reading and writing the records ----------------------------------- */

/* Reads the record id of table t into *rec (owned); 404 naming field when there is none. */
enum kw_err
kw_members_get(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    int flags, const char *field, json_object **rec)
{
	const struct table *k = &tables[t];
	enum kw_err rc = kw_rec_get(req->store, txn, k->db, id, flags, rec);

	if (rc == KW_ENOTFOUND)
		kw_error_set(&req->err, KW_ENOTFOUND, field, "no %s has this %s", k->noun, k->id_field);
	return rc;
}

/*
 * KW_OK when org_id (NULL: none) names an organization.  Else 400 naming
 * organization_id in the words of LiteLLM's get_org_object, which
 * generate_key_fn and new_team call for a sent organization_id: their
 * check for a missing one answers 400, but get_org_object raises first
 * and LiteLLM's client sees that message as a 500.
 */
enum kw_err
kw_members_org_known(struct kw_req *req, DB_TXN *txn, const char *org_id)
{
	json_object *org = NULL;
	enum kw_err rc = org_id != NULL ? kw_rec_get(req->store, txn, KW_DB_ORGS, org_id, 0, &org) :
	    KW_OK;

	json_object_put(org);
	if (rc != KW_ENOTFOUND)
		return rc;
	kw_error_set(&req->err, KW_EINVAL, "organization_id", "Organization doesn't exist in db. "
	    "Organization=%s. Create organization via `/organization/new` call.", org_id);
	return KW_EINVAL;
}

/* KW_OK when no record of t has id; 400 naming its id field when one has. */
enum kw_err
kw_members_absent(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id)
{
	const struct table *k = &tables[t];
	json_object *rec;
	enum kw_err rc = kw_rec_get(req->store, txn, k->db, id, KW_RMW, &rec);

	if (rc == KW_OK) {
		json_object_put(rec);
		kw_error_set(&req->err, KW_ECONFLICT, k->id_field, "%s with this %s exists", k->a_noun,
		    k->id_field);
		return KW_ECONFLICT;
	}
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/*
 * Stores rec (borrowed) as record id of t with its audit entry: created
 * when before is NULL (KW_ECONFLICT when id exists), else updated from
 * before (borrowed).  The caller sets updated_at.
 */
enum kw_err
kw_members_write(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    json_object *before, json_object *rec)
{
	const struct table *k = &tables[t];
	enum kw_err rc = kw_rec_put(req->store, txn, k->db, id, rec, before == NULL);

	if (rc == KW_OK)
		rc = kw_audit_record(req, txn, before == NULL ? "created" : "updated", k->audit, id,
		    before, rec);
	return rc;
}

/* kw_members_write of a change to rec from before, stamped updated_at now. */
enum kw_err
kw_members_update(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    json_object *before, json_object *rec)
{
	kw_json_set_time(rec, "updated_at", req->now);
	return kw_members_write(req, txn, t, id, before, rec);
}

/* --- members ------------------------------------------------------------ */

/* The entry of user_id in rec's array field of members (borrowed from rec), or NULL. */
static json_object *
member_entry(json_object *rec, const char *field, const char *user_id)
{
	json_object *members;

	if (rec == NULL || field == NULL || user_id == NULL || *user_id == '\0' ||
	    !json_object_object_get_ex(rec, field, &members) ||
	    !json_object_is_type(members, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(members); i++) {
		json_object *m = json_object_array_get_idx(members, i);
		const char *id = kw_json_str(m, "user_id");

		if (id != NULL && strcmp(id, user_id) == 0)
			return m;
	}
	return NULL;
}

/*
 * The role of user_id in rec (a record of t, or NULL), NULL when not a
 * member: a team's "admin" or "user", an organization's user_role
 * ("internal_user" when unset).  Borrowed from rec or static.
 */
const char *
kw_members_role(enum kw_members_table t, json_object *rec, const char *user_id)
{
	const struct table *k = &tables[t];
	json_object *m = member_entry(rec, k->list, user_id);
	const char *role = kw_json_str(m, k->role_field);

	if (m == NULL)
		return NULL;
	if (k->closed_roles)
		return role != NULL && strcmp(role, k->admin_role) == 0 ? k->admin_role :
		    k->default_role;
	return role != NULL ? role : k->default_role;
}

/* True when user_id is one of rec's admins: a team's admin, an organization's org_admin. */
int
kw_members_is_admin(enum kw_members_table t, json_object *rec, const char *user_id)
{
	const char *role = kw_members_role(t, rec, user_id);

	return role != NULL && strcmp(role, tables[t].admin_role) == 0;
}

/* The members array of rec, a record of t (borrowed), added when missing. */
json_object *
kw_members_array(enum kw_members_table t, json_object *rec)
{
	const char *field = tables[t].list;
	json_object *members;

	if (!json_object_object_get_ex(rec, field, &members) ||
	    !json_object_is_type(members, json_type_array)) {
		members = json_object_new_array();
		json_object_object_add(rec, field, members);
	}
	return members;
}

/*
 * KW_OK when the caller may see rec: an admin or admin viewer, one of its
 * members, or for a team a key of that team (team_endpoints.py
 * validate_membership: "allow team keys to check their info"); else 403.
 */
enum kw_err
kw_members_may_see(struct kw_req *req, enum kw_members_table t, json_object *rec)
{
	const struct table *k = &tables[t];
	const char *id = kw_json_str(rec, k->id_field);

	if (kw_auth_reads_all(req->caller) || kw_members_role(t, rec, req->caller->user_id) != NULL)
		return KW_OK;
	if (t == KW_MEMBERS_TEAMS && id != NULL && req->caller->team_id[0] != '\0' &&
	    strcmp(id, req->caller->team_id) == 0)
		return KW_OK;
	kw_error_set(&req->err, KW_EFORBIDDEN, k->id_field,
	    "only the %s's members and admins may see it", k->noun);
	return KW_EFORBIDDEN;
}

/* KW_OK when the caller may change rec's members: a proxy admin or one of its admins; else 403. */
enum kw_err
kw_members_may_manage(struct kw_req *req, enum kw_members_table t, json_object *rec)
{
	const struct table *k = &tables[t];

	if (kw_auth_is_admin(req->caller) || kw_members_is_admin(t, rec, req->caller->user_id))
		return KW_OK;
	kw_error_set(&req->err, KW_EFORBIDDEN, k->manage_field,
	    "only a proxy admin or one of the %s's %ss may do this", k->noun, k->admin_role);
	return KW_EFORBIDDEN;
}

/*
 * Reads record id of t into *rec (owned) when the caller may see it, or
 * with manage, for writing when they may change its members: 404 naming
 * field, then 403 (*rec NULL after either).
 */
enum kw_err
kw_members_open(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    const char *field, int manage, json_object **rec)
{
	enum kw_err rc = kw_members_get(req, txn, t, id, manage ? KW_RMW : 0, field, rec);

	if (rc == KW_OK && (rc = manage ? kw_members_may_manage(req, t, *rec) :
	    kw_members_may_see(req, t, *rec)) != KW_OK) {
		json_object_put(*rec);
		*rec = NULL;
	}
	return rc;
}

/*
 * Into *found, the user_id of the member of rec named by user_id, else by
 * email (the email on the member entry, else the user who has it); NULL
 * when no member matches.  *found is request-owned (arena).
 */
enum kw_err
kw_members_find(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, json_object *rec,
    const char *user_id, const char *email, const char **found)
{
	json_object *members = kw_members_array(t, rec);
	const char *id = NULL;
	enum kw_err rc;

	*found = NULL;
	if (user_id == NULL && email == NULL)
		return KW_OK;
	if (user_id == NULL) {
		for (size_t i = 0; i < json_object_array_length(members) && id == NULL; i++) {
			json_object *m = json_object_array_get_idx(members, i);
			const char *e = kw_json_str(m, "user_email");

			if (e != NULL && strcasecmp(e, email) == 0)
				id = kw_json_str(m, "user_id");
		}
		if (id == NULL && (rc = kw_members_user_by_email(req, txn, email, &user_id)) != KW_OK)
			return rc == KW_ENOTFOUND ? KW_OK : rc;
	}
	if (id == NULL && kw_members_role(t, rec, user_id) != NULL)
		id = user_id;
	/* an id from rec's members dies when they change: keep a copy */
	if (id != NULL && (*found = kw_arena_strndup(req->arena, id, strlen(id))) == NULL)
		return KW_ENOMEM;
	return KW_OK;
}

/* The member entry of user_id in rec, a record of t (borrowed from rec), or NULL. */
json_object *
kw_members_entry(enum kw_members_table t, json_object *rec, const char *user_id)
{
	return member_entry(rec, tables[t].list, user_id);
}

/* Names the record rec_id of k in user's user_side (a user record being written). */
static void
user_join(struct kw_req *req, const struct table *k, json_object *user, const char *rec_id)
{
	json_object *ids;

	if (!k->user_side_list) {
		if (kw_json_str(user, k->user_side) == NULL) {	/* a user keeps its first one */
			json_object_object_add(user, k->user_side, json_object_new_string(rec_id));
			kw_json_set_time(user, "updated_at", req->now);
		}
		return;
	}
	if (!json_object_object_get_ex(user, k->user_side, &ids) ||
	    !json_object_is_type(ids, json_type_array)) {
		ids = json_object_new_array();
		json_object_object_add(user, k->user_side, ids);
	}
	if (!kw_json_list_has(ids, rec_id))
		json_object_array_add(ids, json_object_new_string(rec_id));
	kw_json_set_time(user, "updated_at", req->now);
}

/* Takes rec_id of k out of user_id's user_side, audited, when that user exists and names it. */
static enum kw_err
user_leave(struct kw_req *req, DB_TXN *txn, const struct table *k, const char *user_id,
    const char *rec_id)
{
	json_object *user, *before;
	const char *had;
	enum kw_err rc = kw_rec_get(req->store, txn, KW_DB_USERS, user_id, KW_RMW, &user);

	if (rc != KW_OK)
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	had = kw_json_str(user, k->user_side);
	if (k->user_side_list ? !kw_json_list_has(json_object_object_get(user, k->user_side), rec_id) :
	    had == NULL || strcmp(had, rec_id) != 0) {
		json_object_put(user);
		return KW_OK;
	}
	kw_budget_settle(user, req->now);
	before = kw_json_copy(user);
	if (k->user_side_list)
		kw_json_list_drop(user, k->user_side, NULL, rec_id);
	else
		json_object_object_add(user, k->user_side, NULL);
	rc = kw_members_update(req, txn, KW_MEMBERS_USERS, user_id, before, user);
	json_object_put(before);
	json_object_put(user);
	return rc;
}

/* A team membership's limits beside its max budget, as LiteLLM keeps them in its budget row. */
static const char *const budget_table_fields[] = { "budget_id", "rpm_limit", "tpm_limit" };

/*
 * Copies into a member entry of t the membership's limits that settings
 * (a request, borrowed; NULL: none) sends: its max budget (budget_field)
 * and, for a team, the budget_id of a /budget/new budget and its own
 * rpm_limit and tpm_limit.  Null or absent leaves one as it is.
 */
static void
take_limits(const struct table *k, json_object *entry, json_object *settings)
{
	size_t n = k->budget_table ? sizeof(budget_table_fields) / sizeof(budget_table_fields[0]) : 0;
	json_object *v;

	if (json_object_object_get_ex(settings, k->budget_field, &v) && v != NULL)
		json_object_object_add(entry, k->budget_field, json_object_get(v));
	for (size_t i = 0; i < n; i++)
		if (json_object_object_get_ex(settings, budget_table_fields[i], &v) && v != NULL)
			json_object_object_add(entry, budget_table_fields[i], json_object_get(v));
}

/* Appends a member entry for user_id to rec's members, with the limits settings sends (take_limits). */
static void
append_entry(struct kw_req *req, enum kw_members_table t, json_object *rec, const char *user_id,
    const char *email, const char *role, json_object *settings)
{
	const struct table *k = &tables[t];
	json_object *entry = json_object_new_object();

	json_object_object_add(entry, "user_id", json_object_new_string(user_id));
	json_object_object_add(entry, "user_email", email != NULL ? json_object_new_string(email) : NULL);
	json_object_object_add(entry, k->role_field,
	    json_object_new_string(role != NULL ? role : k->default_role));
	take_limits(k, entry, settings);
	if (k->stamped)
		kw_json_set_time(entry, "created_at", req->now);
	json_object_array_add(kw_members_array(t, rec), entry);
}

/*
 * Adds member (a TeamMember or OrganizationMember, borrowed) to rec (a
 * record of t being written, not yet stored): finds the user by user_id,
 * else by user_email, creating it when unknown (with a new UUID when only
 * an email names it), and names rec on the user's side (a team in its
 * teams; an organization in its organization_id when it has none); the
 * user is stored with its audit entry.  The entry takes the limits
 * settings sends (a team's max_budget_in_team and budget_id; NULL: none).
 * The user record as stored is appended to
 * updated_users when that is not NULL.  400 naming field for a member
 * without user_id and user_email, one already in rec, or a new user_id
 * with an email another user has.
 */
enum kw_err
kw_members_add(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, json_object *rec,
    json_object *member, const char *field, json_object *settings, json_object *updated_users)
{
	const struct table *k = &tables[t];
	const char *rec_id = kw_json_str(rec, k->id_field);
	const char *user_id = kw_json_str(member, "user_id"), *email = kw_json_str(member, "user_email");
	json_object *user = NULL, *before = NULL;
	char *uuid;
	enum kw_err rc = KW_OK;

	if (email != NULL && *email == '\0')
		email = NULL;
	if (user_id == NULL && email == NULL) {
		kw_error_set(&req->err, KW_EINVAL, field, "each member needs a user_id or a user_email");
		return KW_EINVAL;
	}
	if (user_id == NULL && (rc = kw_members_user_by_email(req, txn, email, &user_id)) == KW_ENOTFOUND) {
		if ((uuid = kw_arena_alloc(req->arena, 37)) == NULL)
			return KW_ENOMEM;
		kw_uuid4(uuid);
		user_id = uuid;
	} else if (rc != KW_OK) {
		return rc;
	}
	if (kw_members_role(t, rec, user_id) != NULL) {
		kw_error_set(&req->err, KW_ECONFLICT, field, "this user is already a member of the %s",
		    k->noun);
		return KW_ECONFLICT;
	}

	rc = kw_rec_get(req->store, txn, KW_DB_USERS, user_id, KW_RMW, &user);
	if (rc == KW_ENOTFOUND) {
		/* a new user named by id may not take an email that names another user */
		if (kw_json_str(member, "user_id") != NULL &&
		    (rc = kw_members_email_free(req, txn, email, NULL, field)) != KW_OK)
			return rc;
		user = kw_members_user_new(req, user_id, email);
		rc = KW_OK;
	} else if (rc == KW_OK) {
		kw_budget_settle(user, req->now);
		before = kw_json_copy(user);
	} else {
		return rc;
	}
	user_join(req, k, user, rec_id);
	if ((rc = kw_members_write(req, txn, KW_MEMBERS_USERS, user_id, before, user)) == KW_OK) {
		/* the user's own email, as stored */
		append_entry(req, t, rec, user_id, kw_json_str(user, "user_email"),
		    kw_json_str(member, "role"), settings);
		if (updated_users != NULL)
			json_object_array_add(updated_users, json_object_get(user));
	}
	json_object_put(before);
	json_object_put(user);
	return rc;
}

/*
 * kw_members_add for members: one member (named field), a list of them
 * (named field[i]), or NULL for none.  *added counts the members added.
 */
enum kw_err
kw_members_add_each(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, json_object *rec,
    json_object *members, const char *field, json_object *settings, json_object *updated_users,
    size_t *added)
{
	enum kw_err rc = KW_OK;

	*added = 0;
	if (members == NULL)
		return KW_OK;
	if (!json_object_is_type(members, json_type_array)) {
		if ((rc = kw_members_add(req, txn, t, rec, members, field, settings,
		    updated_users)) == KW_OK)
			(*added)++;
		return rc;
	}
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(members); i++) {
		char name[KW_FIELD_MAX];

		snprintf(name, sizeof(name), "%s[%zu]", field, i);
		if ((rc = kw_members_add(req, txn, t, rec, json_object_array_get_idx(members, i), name,
		    settings, updated_users)) == KW_OK)
			(*added)++;
	}
	return rc;
}

/*
 * Adds user (a user record, borrowed, that the caller stores naming rec
 * on its side) to rec (a record of t read for writing) with the default
 * role, and stores rec with its audit entry; nothing when already a member.
 */
enum kw_err
kw_members_join(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    json_object *rec, json_object *user)
{
	const char *user_id = kw_json_str(user, "user_id");
	json_object *before;
	enum kw_err rc;

	if (kw_members_role(t, rec, user_id) != NULL)
		return KW_OK;
	if (tables[t].budgeted)
		kw_budget_settle(rec, req->now);
	before = kw_json_copy(rec);
	append_entry(req, t, rec, user_id, kw_json_str(user, "user_email"), NULL, NULL);
	rc = kw_members_update(req, txn, t, id, before, rec);
	json_object_put(before);
	return rc;
}

enum kw_err
kw_members_change(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    json_object *rec, const char *user_id, json_object *settings)
{
	const struct table *k = &tables[t];
	const char *role = kw_json_str(settings, "role");
	json_object *before, *entry;
	enum kw_err rc;

	if (tables[t].budgeted)
		kw_budget_settle(rec, req->now);
	before = kw_json_copy(rec);
	entry = member_entry(rec, k->list, user_id);
	if (entry != NULL && role != NULL)
		json_object_object_add(entry, k->role_field, json_object_new_string(role));
	if (entry != NULL)
		take_limits(k, entry, settings);
	rc = KW_OK;
	if (entry != NULL && !json_object_equal(before, rec)) {
		if (k->stamped)
			kw_json_set_time(entry, "updated_at", req->now);
		rc = kw_members_update(req, txn, t, id, before, rec);
	}
	json_object_put(before);
	return rc;
}

/* Sets name in *table (made when NULL) to entry's field, when the entry has one. */
static void
own_limit(json_object **table, const char *name, json_object *entry, const char *field)
{
	json_object *v;

	if (!json_object_object_get_ex(entry, field, &v) || v == NULL)
		return;
	if (*table == NULL)
		*table = json_object_new_object();
	json_object_object_add(*table, name, json_object_get(v));
}

enum kw_err
kw_members_membership(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, json_object *rec,
    const char *user_id, json_object **out)
{
	const struct table *k = &tables[t];
	const char *rec_id = kw_json_str(rec, k->id_field);
	json_object *entry = member_entry(rec, k->list, user_id), *budget = NULL;
	const char *budget_id = kw_json_str(entry, "budget_id");
	double spend = 0;
	enum kw_err rc = KW_OK;

	*out = NULL;
	if (entry == NULL)
		return KW_OK;
	if (t == KW_MEMBERS_TEAMS &&
	    (rc = kw_limits_member_spend(req->store, txn, rec_id, user_id, req->now, &spend)) != KW_OK)
		return rc;
	if (budget_id != NULL &&
	    (rc = kw_rec_get(req->store, txn, KW_DB_BUDGETS, budget_id, 0, &budget)) != KW_OK &&
	    rc != KW_ENOTFOUND)
		return rc;
	*out = json_object_new_object();
	json_object_object_add(*out, "user_id", json_object_new_string(user_id));
	json_object_object_add(*out, k->id_field, json_object_new_string(rec_id));
	if (k->stamped) {
		json_object_object_add(*out, "user_role",
		    json_object_new_string(kw_members_role(t, rec, user_id)));
		json_object_object_add(*out, "created_at",
		    json_object_get(json_object_object_get(entry, "created_at")));
		json_object_object_add(*out, "updated_at", json_object_get(json_object_object_get(entry,
		    kw_json_has(entry, "updated_at") ? "updated_at" : "created_at")));
	}
	json_object_object_add(*out, "budget_id",
	    budget_id != NULL ? json_object_new_string(budget_id) : NULL);
	json_object_object_add(*out, "spend", json_object_new_double(spend));
	/* the member's own limits are the ones in force (limits.c membership_limits) */
	own_limit(&budget, "max_budget", entry, k->budget_field);
	if (k->budget_table) {
		own_limit(&budget, "rpm_limit", entry, "rpm_limit");
		own_limit(&budget, "tpm_limit", entry, "tpm_limit");
	}
	json_object_object_add(*out, "litellm_budget_table", budget);
	return KW_OK;
}

/* Takes user_id (not borrowed from rec) out of rec's members and stores rec, audited. */
static enum kw_err
take_out(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    json_object *rec, const char *user_id)
{
	json_object *before;
	enum kw_err rc;

	if (tables[t].budgeted)
		kw_budget_settle(rec, req->now);
	before = kw_json_copy(rec);
	kw_json_list_drop(rec, tables[t].list, "user_id", user_id);
	rc = kw_members_update(req, txn, t, id, before, rec);
	json_object_put(before);
	return rc;
}

/*
 * Removes the member of rec (record id of t, read for writing) named by
 * user_id, else by email (kw_members_find), from both sides, each stored
 * with its audit entry: rec's members, then the user's teams or
 * organization_id.  *removed (request-owned) is its user_id.  404 naming
 * user_id, or user_email when user_id is NULL, when no member matches.
 */
enum kw_err
kw_members_remove(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    json_object *rec, const char *user_id, const char *email, const char **removed)
{
	enum kw_err rc = kw_members_find(req, txn, t, rec, user_id, email, removed);

	if (rc != KW_OK)
		return rc;
	if (*removed == NULL) {
		kw_error_set(&req->err, KW_ENOTFOUND, user_id != NULL ? "user_id" : "user_email",
		    "this user is not a member of the %s", tables[t].noun);
		return KW_ENOTFOUND;
	}
	if ((rc = take_out(req, txn, t, id, rec, *removed)) == KW_OK)
		rc = user_leave(req, txn, &tables[t], *removed, id);
	return rc;
}

/*
 * Takes user_id out of the members of record id of t, audited, when that
 * record exists and has them: what deleting a user does to its
 * memberships (the user's side goes with the user).
 */
enum kw_err
kw_members_leave(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    const char *user_id)
{
	json_object *rec;
	enum kw_err rc = kw_rec_get(req->store, txn, tables[t].db, id, KW_RMW, &rec);

	if (rc != KW_OK)
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	if (kw_members_role(t, rec, user_id) != NULL)
		rc = take_out(req, txn, t, id, rec, user_id);
	json_object_put(rec);
	return rc;
}

/* A listing of the records of one table: its filters and what it gathers. */
struct listing {
	struct kw_req *req;
	enum kw_members_table t;
	const char *user_id;		/* only records this user is a member of; NULL: any */
	const char *field, *value;	/* only records whose field is value; NULL: any */
	json_object *out;		/* owned: the records, or their ids */
	int ids;			/* gather ids, not records */
};

/* Appends rec (borrowed; settled for display) or its id to the listing when it passes the filters. */
static int
list_one(const char *id, json_object *rec, void *baton)
{
	struct listing *l = baton;
	const char *v = l->field != NULL ? kw_json_str(rec, l->field) : NULL;

	if (l->field != NULL && (v == NULL || strcmp(v, l->value) != 0))
		return 0;
	if (l->user_id != NULL && kw_members_role(l->t, rec, l->user_id) == NULL)
		return 0;
	if (l->ids) {
		json_object_array_add(l->out, json_object_new_string(id));
		return 0;
	}
	if (tables[l->t].budgeted)
		kw_budget_settle(rec, l->req->now);
	json_object_array_add(l->out, json_object_get(rec));
	return 0;
}

/* A listing's transaction: a scan of its table into a fresh l->out. */
static enum kw_err
list_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct listing *l = baton;

	json_object_put(l->out);
	l->out = json_object_new_array();
	return kw_rec_each(st, txn, tables[l->t].db, list_one, l);
}

/*
 * Into *out (owned array), in id order, the records of t that user_id
 * (NULL: anyone; "" no one) is a member of and whose field (NULL: any) is
 * value, settled for display; in a transaction of its own.
 */
enum kw_err
kw_members_list(struct kw_req *req, enum kw_members_table t, const char *user_id,
    const char *field, const char *value, json_object **out)
{
	struct listing l = { .req = req, .t = t, .user_id = user_id, .field = field, .value = value };
	enum kw_err rc = kw_store_txn(req->store, list_body, &l);

	if (rc != KW_OK) {
		json_object_put(l.out);
		l.out = NULL;
	}
	*out = l.out;
	return rc;
}

/*
 * Into *ids (owned array), in id order, the ids of the records of t whose
 * field is value, read in txn: the teams of an organization.
 */
enum kw_err
kw_members_ids_where(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *field,
    const char *value, json_object **ids)
{
	struct listing l = { .req = req, .t = t, .field = field, .value = value, .ids = 1,
		.out = json_object_new_array() };
	enum kw_err rc = kw_rec_each(req->store, txn, tables[t].db, list_one, &l);

	*ids = l.out;
	return rc;
}

/*
 * Takes user_id out of every record of t it is a member of, in txn,
 * audited: what deleting a user does to its organizations.  The ids are
 * gathered first: no record changes under the scan's cursor.
 */
enum kw_err
kw_members_forget_user(struct kw_req *req, DB_TXN *txn, enum kw_members_table t,
    const char *user_id)
{
	struct listing l = { .req = req, .t = t, .user_id = user_id, .ids = 1,
		.out = json_object_new_array() };
	enum kw_err rc = kw_rec_each(req->store, txn, tables[t].db, list_one, &l);

	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(l.out); i++)
		rc = kw_members_leave(req, txn, t, json_object_get_string(json_object_array_get_idx(l.out,
		    i)), user_id);
	json_object_put(l.out);
	return rc;
}

/*
 * Deletes record id of t (rec, borrowed, as it was) with its audit
 * entry; a team or an organization first leaves its members' user
 * records.
 */
static enum kw_err
delete_one(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    json_object *rec)
{
	const struct table *k = &tables[t];
	json_object *members = k->list != NULL ? json_object_object_get(rec, k->list) : NULL;
	enum kw_err rc = KW_OK;

	for (size_t i = 0; rc == KW_OK && members != NULL && i < json_object_array_length(members);
	    i++) {
		const char *user_id = kw_json_str(json_object_array_get_idx(members, i), "user_id");

		if (user_id != NULL)
			rc = user_leave(req, txn, k, user_id, id);
	}
	if (rc == KW_OK && (rc = kw_rec_del(req->store, txn, k->db, id)) == KW_OK)
		rc = kw_audit_record(req, txn, "deleted", k->audit, id, rec, NULL);
	return rc;
}

enum kw_err
kw_members_delete_all(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, json_object *ids,
    const char *field, kw_members_drop drop, int64_t *keys, json_object **recs)
{
	const struct table *k = &tables[t];
	json_object *read = json_object_new_array();
	enum kw_err rc = KW_OK;

	/* every record first: all or nothing, and 404 names the first one missing */
	*recs = json_object_new_array();
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(ids); i++) {
		const char *id = json_object_get_string(json_object_array_get_idx(ids, i));
		char name[KW_FIELD_MAX];
		json_object *rec;

		if (kw_json_list_has(read, id))
			continue;
		snprintf(name, sizeof(name), "%s[%zu]", field, i);
		if ((rc = kw_members_get(req, txn, t, id, KW_RMW, name, &rec)) == KW_OK) {
			json_object_array_add(*recs, rec);
			json_object_array_add(read, json_object_new_string(id));
		}
	}
	json_object_put(read);
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(*recs); i++) {
		json_object *rec = json_object_array_get_idx(*recs, i);
		const char *id = kw_json_str(rec, k->id_field);

		if ((rc = drop(req, txn, id, rec, keys)) == KW_OK)
			rc = delete_one(req, txn, t, id, rec);
	}
	if (rc != KW_OK) {
		json_object_put(*recs);
		*recs = NULL;
	}
	return rc;
}

enum kw_err
kw_members_delete_listed(struct kw_req *req, DB_TXN *txn, struct kw_op *op,
    enum kw_members_table t, const char *field, kw_members_drop drop)
{
	const struct table *k = &tables[t];
	json_object *recs, *ids;
	int64_t keys = 0;
	char name[64];
	enum kw_err rc = kw_members_delete_all(req, txn, t, json_object_object_get(req->body, field),
	    field, drop, &keys, &recs);

	if (rc != KW_OK)
		return rc;
	ids = json_object_new_array();
	for (size_t i = 0; i < json_object_array_length(recs); i++)
		json_object_array_add(ids, json_object_get(json_object_object_get(
		    json_object_array_get_idx(recs, i), k->id_field)));
	json_object_put(recs);
	op->answer = json_object_new_object();
	snprintf(name, sizeof(name), "deleted_%ss", k->noun);
	json_object_object_add(op->answer, name, ids);
	json_object_object_add(op->answer, "deleted_keys", json_object_new_int64(keys));
	return KW_OK;
}
