/* auth.c: the caller's credential and what it may do. */
#include <string.h>
#include <strings.h>

#include "kw.h"

/*
 * Returns the credential the caller presents, borrowed until the request
 * ends: `Authorization: Bearer ...`, then the x-litellm-api-key, API-Key
 * and x-api-key headers (the ones LiteLLM's clients send); NULL when none.
 */
const char *
kw_auth_credential(struct kw_req *req)
{
	static const char *const headers[] = {
		"HTTP_X_LITELLM_API_KEY", "HTTP_API_KEY", "HTTP_X_API_KEY",
	};
	const char *v = kw_req_header(req, "HTTP_AUTHORIZATION");

	if (v != NULL && strncasecmp(v, "Bearer ", 7) == 0) {
		for (v += 7; *v == ' '; v++)
			;
		if (*v != '\0')
			return v;
	}
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++)
		if ((v = kw_req_header(req, headers[i])) != NULL && *v != '\0')
			return v;
	return NULL;
}

/* Compares a presented secret with the master key in constant time (over their hashes). */
static int
is_master_key(const char *presented)
{
	unsigned char a[KW_SHA256_LEN], b[KW_SHA256_LEN];
	int same;

	if (kw_config.master_key[0] == '\0')
		return 0;
	kw_crypto_sha256(presented, strlen(presented), a);
	kw_crypto_sha256(kw_config.master_key, strlen(kw_config.master_key), b);
	same = kw_crypto_ct_equal(a, b, sizeof(a));
	kw_crypto_wipe(b, sizeof(b));
	return same;
}

/*
 * KW_OK when the caller is the proxy admin (presents the master key);
 * otherwise KW_EAUTH with req->err filled, never echoing the credential.
 */
enum kw_err
kw_auth_admin(struct kw_req *req)
{
	const char *cred = kw_auth_credential(req);

	if (cred == NULL) {
		kw_error_set(&req->err, KW_EAUTH, NULL,
		    "no API key: send Authorization: Bearer sk-...");
		return KW_EAUTH;
	}
	if (!is_master_key(cred)) {
		kw_error_set(&req->err, KW_EAUTH, NULL, "invalid API key");
		return KW_EAUTH;
	}
	return KW_OK;
}
