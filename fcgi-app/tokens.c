/* tokens.c: signed expiry tokens (provisioned keys) that any holder of the signing keys checks without the store. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kw.h"

/*
 * Hex keys, one a line, oldest first; the last signs.  A key that no longer
 * signs has the unix time it stopped after it ("HEX TIME"): a token it
 * signed expires at most KW_PROVISION_TTL_MAX after that, and only then may
 * a rotation drop the key.  A line without a time (files written before
 * times were kept) counts as retired at the next rotation.
 */
#define SIGNING_FILE "signing.key"
#define MAX_SIGNING_KEYS 256
#define KEY_BYTES 32
#define KID_BYTES 4
#define ID_BYTES 16
#define MAC_BYTES 16
#define BODY_BYTES (KID_BYTES + ID_BYTES + 8)
#define TOKEN_BYTES (BODY_BYTES + MAC_BYTES)
#define PREFIX_LEN (sizeof(KW_TOKEN_PREFIX) - 1)

/* The signing keys of this process, reread when the file changes (a rotation). */
static struct {
	unsigned char key[MAX_SIGNING_KEYS][KEY_BYTES];
	unsigned char kid[MAX_SIGNING_KEYS][KID_BYTES];
	int64_t retired[MAX_SIGNING_KEYS];	/* when it stopped signing; 0 current or unknown */
	size_t n;
	struct timespec mtime;
	ino_t ino;
} ring;

static void
signing_path(char *buf, size_t n)
{
	snprintf(buf, n, "%s/%s", kw_config.data_dir, SIGNING_FILE);
}

/* A key's id: the first 4 bytes of its SHA-256, so no state names it. */
static void
kid_of(const unsigned char key[KEY_BYTES], unsigned char kid[KID_BYTES])
{
	unsigned char digest[KW_SHA256_LEN];

	kw_crypto_sha256(key, KEY_BYTES, digest);
	memcpy(kid, digest, KID_BYTES);
}

/* Reads the signing keys again when the file is not the one read last. */
static enum kw_err
load_ring(void)
{
	char path[4200], line[2 * KEY_BYTES + 32];
	struct stat sb;
	FILE *f;
	size_t n = 0;

	signing_path(path, sizeof(path));
	if (stat(path, &sb) != 0)
		return KW_EUNAVAIL;
	if (ring.n > 0 && sb.st_ino == ring.ino && sb.st_mtim.tv_sec == ring.mtime.tv_sec &&
	    sb.st_mtim.tv_nsec == ring.mtime.tv_nsec)
		return KW_OK;
	if ((f = fopen(path, "r")) == NULL)
		return KW_EUNAVAIL;
	kw_crypto_wipe(&ring, sizeof(ring));
	while (n < MAX_SIGNING_KEYS && fgets(line, sizeof(line), f) != NULL) {
		size_t len = strcspn(line, " \r\n");

		if (len != 2 * KEY_BYTES || kw_crypto_unhex(line, len, ring.key[n]) != KW_OK)
			continue;
		kid_of(ring.key[n], ring.kid[n]);
		ring.retired[n] = line[len] == ' ' ? strtoll(line + len + 1, NULL, 10) : 0;
		n++;
	}
	kw_crypto_wipe(line, sizeof(line));
	fclose(f);
	if (n == 0)
		return KW_EUNAVAIL;
	ring.n = n;
	ring.ino = sb.st_ino;
	ring.mtime = sb.st_mtim;
	return KW_OK;
}

static void
mac_of(const unsigned char key[KEY_BYTES], const unsigned char body[BODY_BYTES],
    unsigned char mac[MAC_BYTES])
{
	unsigned char msg[3 + BODY_BYTES], full[KW_SHA256_LEN];

	memcpy(msg, "kw1", 3);
	memcpy(msg + 3, body, BODY_BYTES);
	kw_crypto_hmac_sha256(key, KEY_BYTES, msg, sizeof(msg), full);
	memcpy(mac, full, MAC_BYTES);
}

/*
 * Writes a new token expiring at expires into out (n bytes, at least 70):
 * signed by the current (last) signing key, with a random id.
 */
enum kw_err
kw_tokens_issue(time_t expires, char *out, size_t n)
{
	unsigned char raw[TOKEN_BYTES];
	const unsigned char *key;
	uint64_t exp = (uint64_t)expires;
	enum kw_err rc;

	if ((rc = load_ring()) != KW_OK)
		return rc;
	if (n < PREFIX_LEN + 4 * ((TOKEN_BYTES + 2) / 3) + 1)
		return KW_EINVAL;
	key = ring.key[ring.n - 1];
	memcpy(raw, ring.kid[ring.n - 1], KID_BYTES);
	kw_crypto_random(raw + KID_BYTES, ID_BYTES);
	for (int i = 0; i < 8; i++)
		raw[KID_BYTES + ID_BYTES + i] = (unsigned char)(exp >> (56 - 8 * i));
	mac_of(key, raw, raw + BODY_BYTES);
	memcpy(out, KW_TOKEN_PREFIX, PREFIX_LEN);
	kw_crypto_b64url(raw, sizeof(raw), out + PREFIX_LEN);
	return KW_OK;
}

static int
b64url_value(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Decodes exactly TOKEN_BYTES from unpadded base64url s; 0 when s is anything else. */
static int
decode(const char *s, unsigned char out[TOKEN_BYTES])
{
	size_t len = strlen(s), o = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (len != 4 * (TOKEN_BYTES / 3) + (TOKEN_BYTES % 3 ? TOKEN_BYTES % 3 + 1 : 0))
		return 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value((unsigned char)s[i]);

		if (v < 0)
			return 0;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == TOKEN_BYTES)
				return 0;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	/* the unused low bits of the last character must be zero: one spelling per token */
	return o == TOKEN_BYTES && (acc & ((1u << bits) - 1)) == 0;
}

/*
 * Checks a presented key that looks like a signed token, from the key
 * material alone: its signing key must be known, its MAC right (compared
 * in constant time), its expiry in the future.  Revocation is the store's
 * to say, after KW_TOKEN_GOOD.
 */
enum kw_token_check
kw_tokens_check(const char *presented, time_t now)
{
	unsigned char raw[TOKEN_BYTES], mac[MAC_BYTES];
	uint64_t exp = 0;
	enum kw_token_check verdict = KW_TOKEN_FORGED;

	if (strncmp(presented, KW_TOKEN_PREFIX, PREFIX_LEN) != 0)
		return KW_TOKEN_NOT_SIGNED;
	if (!decode(presented + PREFIX_LEN, raw) || load_ring() != KW_OK)
		return KW_TOKEN_FORGED;
	for (size_t i = 0; i < ring.n; i++) {
		if (memcmp(ring.kid[i], raw, KID_BYTES) != 0)
			continue;
		mac_of(ring.key[i], raw, mac);
		if (kw_crypto_ct_equal(mac, raw + BODY_BYTES, MAC_BYTES))
			verdict = KW_TOKEN_GOOD;
		break;
	}
	for (int i = 0; i < 8; i++)
		exp = exp << 8 | raw[KID_BYTES + ID_BYTES + i];
	if (verdict == KW_TOKEN_GOOD && (time_t)exp <= now)
		verdict = KW_TOKEN_EXPIRED;
	kw_crypto_wipe(mac, sizeof(mac));
	return verdict;
}

/*
 * Adds a new signing key and makes it current.  The one that signed until
 * now is stamped with the time it stopped; an old key is dropped only once
 * KW_PROVISION_TTL_MAX has passed since then, when no token it signed can
 * be unexpired, so every token verifies until it expires however often
 * keys rotate.  KW_ELIMIT, writing nothing, when MAX_SIGNING_KEYS keys
 * would all still be needed.  The file is replaced atomically (written
 * beside it, then renamed), 0600.
 */
enum kw_err
kw_tokens_rotate(void)
{
	char path[4200], tmp[4300], hex[2 * KEY_BYTES + 1];
	unsigned char key[KEY_BYTES];
	int64_t now = (int64_t)kw_clock_now();
	size_t kept = 0;
	enum kw_err rc = KW_OK;
	FILE *f;
	int fd;

	if ((rc = load_ring()) != KW_OK)
		return rc;
	for (size_t i = 0; i < ring.n; i++) {
		if (i == ring.n - 1 || ring.retired[i] == 0)
			ring.retired[i] = now;	/* stops signing now (or, unknown, counts from now) */
		kept += ring.retired[i] + KW_PROVISION_TTL_MAX > now;
	}
	if (kept + 1 > MAX_SIGNING_KEYS) {
		kw_log_error("tokens: %zu signing keys may still verify unexpired tokens; "
		    "not rotating again before the oldest is %d s retired", kept,
		    KW_PROVISION_TTL_MAX);
		ring.n = 0;	/* the stamps above were not written: read the file again */
		return KW_ELIMIT;
	}
	signing_path(path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0 ||
	    (f = fdopen(fd, "w")) == NULL) {
		if (fd >= 0)
			close(fd);
		ring.n = 0;
		return KW_EUNAVAIL;
	}
	for (size_t i = 0; i < ring.n; i++) {
		if (ring.retired[i] + KW_PROVISION_TTL_MAX <= now)
			continue;	/* every token it signed has expired */
		kw_crypto_hex(ring.key[i], KEY_BYTES, hex);
		fprintf(f, "%s %lld\n", hex, (long long)ring.retired[i]);
	}
	kw_crypto_random(key, sizeof(key));
	kw_crypto_hex(key, sizeof(key), hex);
	fprintf(f, "%s\n", hex);
	kw_crypto_wipe(key, sizeof(key));
	kw_crypto_wipe(hex, sizeof(hex));
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		rc = KW_EUNAVAIL;
	if (fclose(f) != 0)
		rc = KW_EUNAVAIL;
	if (rc == KW_OK && rename(tmp, path) != 0)
		rc = KW_EUNAVAIL;
	if (rc != KW_OK)
		unlink(tmp);
	ring.n = 0;	/* this process reads the new file at its next token */
	return rc;
}
