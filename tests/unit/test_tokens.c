/* test_tokens.c: signed expiry tokens: issued, checked, forged, expired, and across a signing-key rotation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kw.h"
#include "tap.h"

static char dir[] = "/tmp/kw-test-tokens-XXXXXX";

/* Flips one bit of the character at i of a token, keeping it base64url. */
static void
flip(char *token, size_t i)
{
	token[i] = token[i] == 'A' ? 'B' : 'A';
}

int
main(void)
{
	char token[128], old[128], cmd[160];
	time_t now = 1795334400;

	kw_crypto_init();
	setenv("KEYWARDEN_LOG_LEVEL", "error", 1);
	setenv("KEYWARDEN_MASTER_KEY", "sk-test-master-key-0123456789", 1);
	if (mkdtemp(dir) == NULL || kw_config_load(dir) != KW_OK ||
	    kw_config_init_data_dir(0) != KW_OK)
		return 1;

	is_int(kw_tokens_issue(now + 60, token, sizeof(token)), KW_OK, "a token is issued");
	ok(strncmp(token, "sk-kw1_", 7) == 0, "it starts with sk-kw1_ (%s...)", "sk-kw1_");
	is_int(kw_tokens_check(token, now), KW_TOKEN_GOOD, "it checks good before its expiry");
	is_int(kw_tokens_check(token, now + 60), KW_TOKEN_EXPIRED, "and expired at it");
	is_int(kw_tokens_check("sk-ordinary-key-123", now), KW_TOKEN_NOT_SIGNED,
	    "an ordinary key is no token");
	snprintf(old, sizeof(old), "%s", token);
	size_t tried = 0, forged = 0;

	for (size_t i = 7; i < strlen(token); i++, tried++) {
		flip(token, i);
		forged += kw_tokens_check(token, now) == KW_TOKEN_FORGED;
		flip(token, i);
	}
	ok(tried > 50 && forged == tried, "every one of %zu flipped characters makes it forged",
	    tried);
	token[strlen(token) - 1] = '\0';
	is_int(kw_tokens_check(token, now), KW_TOKEN_FORGED, "a shortened token is forged");
	is_int(kw_tokens_check("sk-kw1_not*base64", now), KW_TOKEN_FORGED, "garbage is forged");

	is_int(kw_tokens_rotate(), KW_OK, "the signing key rotates");
	is_int(kw_tokens_check(old, now), KW_TOKEN_GOOD, "a token of the old key still checks");
	kw_tokens_issue(now + 60, token, sizeof(token));
	is_int(kw_tokens_check(token, now), KW_TOKEN_GOOD, "a new token checks");
	ok(strncmp(token + 7, old + 7, 5) != 0, "and carries the new key's id");
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return tap_done();
}
