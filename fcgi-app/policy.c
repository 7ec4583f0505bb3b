/* policy.c: who may change which field of a key or a team: one table, used by every face that writes them. */
#include <stdio.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"

/*
 * A field's row: the least standing that may set or change it.  A field a
 * table does not name needs a proxy admin, so a field added to the spec is
 * locked until someone decides who may change it.
 *
 * The rule is LiteLLM's: a key's owner manages its name, metadata and
 * rotation; limits, spend, models, expiry, blocking and the team are for
 * an admin of the level above (the key's team admins, else a proxy admin),
 * and a capability (permissions) or another owner only a proxy admin
 * grants.  A team's admins name and describe their team; its limits and
 * its blocking are for the organization's admins or a proxy admin.
 */
struct field_rule {
	const char *field;
	enum kw_standing need;
};

static const struct field_rule key_rules[] = {
	/* what the request names, and the one-shot options of a regeneration */
	{ "key", KW_STANDING_OWNER },
	{ "new_key", KW_STANDING_OWNER },
	{ "grace_period", KW_STANDING_OWNER },
	{ "send_invite_email", KW_STANDING_OWNER },
	/* the owner's own description of the key */
	{ "key_alias", KW_STANDING_OWNER },
	{ "metadata", KW_STANDING_OWNER },
	{ "tags", KW_STANDING_OWNER },
	{ "auto_rotate", KW_STANDING_OWNER },
	{ "rotation_interval", KW_STANDING_OWNER },
	/* limits, spend and standing: the level above */
	{ "max_budget", KW_STANDING_ABOVE },
	{ "soft_budget", KW_STANDING_ABOVE },
	{ "budget_duration", KW_STANDING_ABOVE },
	{ "budget_id", KW_STANDING_ABOVE },
	{ "temp_budget_increase", KW_STANDING_ABOVE },
	{ "temp_budget_expiry", KW_STANDING_ABOVE },
	{ "model_max_budget", KW_STANDING_ABOVE },
	{ "rpm_limit", KW_STANDING_ABOVE },
	{ "tpm_limit", KW_STANDING_ABOVE },
	{ "max_parallel_requests", KW_STANDING_ABOVE },
	{ "model_rpm_limit", KW_STANDING_ABOVE },
	{ "model_tpm_limit", KW_STANDING_ABOVE },
	{ "models", KW_STANDING_ABOVE },
	{ "aliases", KW_STANDING_ABOVE },
	{ "allowed_routes", KW_STANDING_ABOVE },
	{ "allowed_cache_controls", KW_STANDING_ABOVE },
	{ "guardrails", KW_STANDING_ABOVE },
	{ "enforced_params", KW_STANDING_ABOVE },
	{ "object_permission", KW_STANDING_ABOVE },
	{ "config", KW_STANDING_ABOVE },
	{ "key_type", KW_STANDING_ABOVE },
	{ "duration", KW_STANDING_ABOVE },
	{ "expires", KW_STANDING_ABOVE },
	{ "blocked", KW_STANDING_ABOVE },
	{ "team_id", KW_STANDING_ABOVE },
	{ "organization_id", KW_STANDING_ABOVE },
	/* whom the key is for: its creator's choice within check_ownership's rules; a change is a proxy admin's */
	{ "user_id", KW_STANDING_ABOVE },
	/* capabilities over other keys, and the spend it has run up */
	{ "permissions", KW_STANDING_ADMIN },
	{ "spend", KW_STANDING_ADMIN },
};

static const struct field_rule team_rules[] = {
	{ "team_id", KW_STANDING_OWNER },
	{ "team_alias", KW_STANDING_OWNER },
	{ "metadata", KW_STANDING_OWNER },
	{ "tags", KW_STANDING_OWNER },
	{ "max_budget", KW_STANDING_ABOVE },
	{ "soft_budget", KW_STANDING_ABOVE },
	{ "budget_duration", KW_STANDING_ABOVE },
	{ "rpm_limit", KW_STANDING_ABOVE },
	{ "tpm_limit", KW_STANDING_ABOVE },
	{ "max_parallel_requests", KW_STANDING_ABOVE },
	{ "models", KW_STANDING_ABOVE },
	{ "model_aliases", KW_STANDING_ABOVE },
	{ "guardrails", KW_STANDING_ABOVE },
	{ "blocked", KW_STANDING_ABOVE },
	{ "organization_id", KW_STANDING_ADMIN },
};

/* A Venice key's PATCH: its ADMIN key describes it; its limits and expiry are its maker's. */
static const struct field_rule venice_rules[] = {
	{ "id", KW_STANDING_OWNER },
	{ "description", KW_STANDING_OWNER },
	{ "consumptionLimit", KW_STANDING_ABOVE },
	{ "limitPeriod", KW_STANDING_ABOVE },
	{ "expiresAt", KW_STANDING_ABOVE },
	{ "modelPrivacy", KW_STANDING_ABOVE },	/* a restriction: not the restricted key's own */
};

/*
 * A member's place in a team or an organization (/team/member_update,
 * /organization/member_update): naming the member is anyone's who may
 * reach it; its role and its budget are for the level above, so an admin
 * neither raises its own max_budget_in_team nor changes its own role
 * (LiteLLM's team_member_update and organization_member_update let the
 * team's or organization's admins change the others).
 */
static const struct field_rule member_rules[] = {
	{ "team_id", KW_STANDING_OWNER },
	{ "organization_id", KW_STANDING_OWNER },
	{ "user_id", KW_STANDING_OWNER },
	{ "user_email", KW_STANDING_OWNER },
	{ "role", KW_STANDING_ABOVE },
	{ "max_budget_in_team", KW_STANDING_ABOVE },
	{ "max_budget_in_organization", KW_STANDING_ABOVE },
	{ "budget_id", KW_STANDING_ABOVE },
	{ "rpm_limit", KW_STANDING_ABOVE },
	{ "tpm_limit", KW_STANDING_ABOVE },
};

static const struct {
	const struct field_rule *rules;
	size_t n;
	const char *what;
} tables[] = {
	[KW_POLICY_KEY] = { key_rules, sizeof(key_rules) / sizeof(key_rules[0]), "key" },
	[KW_POLICY_TEAM] = { team_rules, sizeof(team_rules) / sizeof(team_rules[0]), "team" },
	[KW_POLICY_VENICE] = { venice_rules, sizeof(venice_rules) / sizeof(venice_rules[0]),
	    "Venice key" },
	[KW_POLICY_MEMBER] = { member_rules, sizeof(member_rules) / sizeof(member_rules[0]),
	    "membership" },
};

enum kw_standing
kw_policy_need(enum kw_policy_kind kind, const char *field)
{
	for (size_t i = 0; i < tables[kind].n; i++)
		if (strcmp(tables[kind].rules[i].field, field) == 0)
			return tables[kind].rules[i].need;
	return KW_STANDING_ADMIN;
}

/* Who may do what a standing allows, for the error that refuses a field. */
static const char *
who_may(enum kw_policy_kind kind, enum kw_standing need)
{
	if (need == KW_STANDING_ADMIN)
		return "a proxy admin";
	switch (kind) {
	case KW_POLICY_KEY:
		return need == KW_STANDING_ABOVE ? "the key's team admins or a proxy admin" :
		    "the key's owner";
	case KW_POLICY_TEAM:
		return need == KW_STANDING_ABOVE ?
		    "the team's organization admins or a proxy admin" : "the team's admins";
	case KW_POLICY_MEMBER:
		return need == KW_STANDING_ABOVE ? "the admins over the member or a proxy admin" :
		    "the member";
	default:
		return need == KW_STANDING_ABOVE ? "the ADMIN key that made it or the master key" :
		    "its owner's ADMIN keys";
	}
}

/*
 * True when body's value of field would leave old as it is: the same JSON
 * text.  A client that sends a whole record back, changed in one field,
 * is judged on that field alone.  A duration always moves the expiry.
 */
static int
unchanged(json_object *old, const char *field, json_object *value)
{
	return old != NULL && strcmp(field, "duration") != 0 && kw_json_field_is(old, field, value);
}

enum kw_err
kw_policy_check(struct kw_req *req, enum kw_policy_kind kind, enum kw_standing standing,
    json_object *old, json_object *body)
{
	json_object_object_foreach(body, field, value) {
		enum kw_standing need = kw_policy_need(kind, field);

		if (standing >= need || unchanged(old, field, value))
			continue;
		kw_error_set(&req->err, KW_EFORBIDDEN, field, "only %s may %s a %s's %s",
		    who_may(kind, need), old == NULL ? "set" : "change", tables[kind].what, field);
		return KW_EFORBIDDEN;
	}
	return KW_OK;
}

/* True when the caller is an admin ("admin") of team team_id, read in txn; *rc a store error. */
static int
admin_of_team(struct kw_req *req, DB_TXN *txn, const char *team_id, enum kw_err *rc)
{
	json_object *team = NULL;
	int admin;

	*rc = kw_rec_get(req->store, txn, KW_DB_TEAMS, team_id, 0, &team);
	if (*rc == KW_ENOTFOUND)
		*rc = KW_OK;
	admin = kw_members_is_admin(KW_MEMBERS_TEAMS, team, req->caller->user_id);
	json_object_put(team);
	return admin;
}

enum kw_err
kw_policy_key_standing(struct kw_req *req, DB_TXN *txn, json_object *key,
    enum kw_standing *out)
{
	const struct kw_caller *c = req->caller;
	const char *owner = kw_json_str(key, "user_id"), *team_id = kw_json_str(key, "team_id");
	enum kw_err rc = KW_OK;

	*out = KW_STANDING_NONE;
	if (kw_auth_is_admin(c))
		*out = KW_STANDING_ADMIN;
	else if (c->user_id[0] == '\0')
		;	/* a key without a user manages nothing */
	else if (team_id != NULL)
		/* a team's keys are its admins' to manage: TeamMemberPermissionChecks gives members /key/info only */
		*out = admin_of_team(req, txn, team_id, &rc) ? KW_STANDING_ABOVE : KW_STANDING_NONE;
	else if (owner != NULL && strcmp(owner, c->user_id) == 0)
		*out = KW_STANDING_OWNER;
	return rc;
}

enum kw_standing
kw_policy_team_standing(struct kw_req *req, json_object *team, json_object *org)
{
	const struct kw_caller *c = req->caller;

	if (kw_auth_is_admin(c))
		return KW_STANDING_ADMIN;
	if (c->user_id[0] == '\0')
		return KW_STANDING_NONE;
	if (kw_members_is_admin(KW_MEMBERS_ORGS, org, c->user_id))
		return KW_STANDING_ABOVE;
	if (kw_members_is_admin(KW_MEMBERS_TEAMS, team, c->user_id))
		return KW_STANDING_OWNER;
	return KW_STANDING_NONE;
}

enum kw_standing
kw_policy_venice_standing(struct kw_req *req, json_object *key)
{
	const struct kw_caller *c = req->caller;
	const char *maker = kw_json_str(json_object_object_get(key, "venice"), "maker");
	const char *created_by = kw_json_str(key, "created_by"), *token = kw_json_str(key, "token");

	if (c->is_master)
		return KW_STANDING_ADMIN;
	if (token == NULL || strcmp(token, c->token) == 0)
		return KW_STANDING_OWNER;	/* an ADMIN key does not lift its own limits */
	if (maker != NULL)
		return strcmp(maker, c->token) == 0 ? KW_STANDING_ABOVE : KW_STANDING_OWNER;
	/* a key made before makers were recorded: its maker's user */
	return c->user_id[0] != '\0' && created_by != NULL && strcmp(created_by, c->user_id) == 0 ?
	    KW_STANDING_ABOVE : KW_STANDING_OWNER;
}

/*
 * The caller's standing toward user_id's membership of rec: a team's
 * (is_team, org its organization or NULL) or an organization's.
 */
enum kw_standing
kw_policy_member_standing(struct kw_req *req, int is_team, json_object *rec, json_object *org,
    const char *user_id)
{
	const struct kw_caller *c = req->caller;
	int self = user_id != NULL && strcmp(user_id, c->user_id) == 0;

	if (kw_auth_is_admin(c))
		return KW_STANDING_ADMIN;
	if (c->user_id[0] == '\0')
		return KW_STANDING_NONE;
	if (is_team && kw_members_is_admin(KW_MEMBERS_ORGS, org, c->user_id))
		return KW_STANDING_ABOVE;
	if (kw_members_is_admin(is_team ? KW_MEMBERS_TEAMS : KW_MEMBERS_ORGS, rec, c->user_id))
		return self ? KW_STANDING_OWNER : KW_STANDING_ABOVE;
	return self ? KW_STANDING_OWNER : KW_STANDING_NONE;
}
