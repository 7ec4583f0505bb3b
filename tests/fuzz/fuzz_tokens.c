/* fuzz_tokens.c: libFuzzer target: the signed expiry token parser, under real signing keys. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kw.h"
#include "fuzz_dir.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

static char dir[] = "/tmp/kw-fuzz-tokens-XXXXXX";

/* The data directory goes when the fuzzer exits. */
static void
remove_dir(void)
{
	fuzz_remove_tree(dir);
}
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A data directory with a signing key, made once. */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	kw_crypto_init();
	setenv("KEYWARDEN_LOG_LEVEL", "error", 1);
	setenv("KEYWARDEN_MASTER_KEY", "sk-fuzz-master-key-0123456789", 1);
	if (mkdtemp(dir) == NULL || kw_config_load(dir) != KW_OK ||
	    kw_config_init_data_dir(0) != KW_OK)
		abort();
	atexit(remove_dir);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 8);

	if (s == NULL)
		return 0;
	/* half the inputs behind the token prefix, so the decoder and MAC check run */
	if (size > 0 && data[0] & 1) {
		memcpy(s, KW_TOKEN_PREFIX, 7);
		memcpy(s + 7, data + 1, size - 1);
		s[size + 6] = '\0';
	} else {
		memcpy(s, data, size);
		s[size] = '\0';
	}
	(void)kw_tokens_check(s, 1795334400);
	free(s);
	return 0;
}
