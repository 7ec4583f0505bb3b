/* crypto.c: hashing, MACs, sealed records, randomness and encodings on libgcrypt. */

/* explicit_bzero() is a BSD/GNU extension; -std=c11 hides it otherwise. */
#if !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE 1
#endif

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <gcrypt.h>

#include "kw.h"

/*
 * Size of libgcrypt's secure-memory pool.  It holds the CSPRNG's pools
 * (about 1.3 KiB with GCRYCTL_USE_SECURE_RNDPOOL), from which every key and
 * token is drawn.  Our cipher and MAC handles are deliberately not opened
 * with the SECURE flags: the keys they are given already sit in ordinary
 * memory, libgcrypt wipes a handle's key schedule on close, and a full
 * pool would then fail requests.  16 KiB is libgcrypt's documented example
 * and well under the usual unprivileged RLIMIT_MEMLOCK (64 KiB on old
 * kernels, 8 MiB on current ones).
 */
#define SECMEM_POOL 16384

static int initialised;

/*
 * Initialises libgcrypt for this process.  Must run before any kw_crypto_*
 * call that reaches libgcrypt (random, hashes, MACs, seal, open; the
 * encoders, ct_equal and wipe do not need it).  Idempotent: a second call, or a call in a worker
 * forked after the parent initialised, returns KW_OK without touching
 * libgcrypt again (the flag is inherited across fork, and libgcrypt's RNG
 * mixes the pid in on its own, so a child never repeats its parent's
 * output).  If another component already finished libgcrypt's
 * initialisation, that is accepted as is.
 *
 * Secure memory: we ask for a small locked pool, rather than
 * GCRYCTL_DISABLE_SECMEM, so that what libgcrypt keeps of secrets (cipher
 * and MAC contexts; the RNG pools, were its own CSPRNG chosen) stays out
 * of swap, for 16 KiB.  If the pool cannot be
 * locked (an RLIMIT_MEMLOCK of 0 in some containers) libgcrypt still uses
 * it as ordinary memory, which is what DISABLE_SECMEM would have given, so
 * that is not an error; the warning libgcrypt would otherwise print in
 * every worker is silenced because a server's stderr is its log and the
 * condition cannot be acted on per process.  Memory locks are not
 * inherited across fork(2): a worker's copy of the pool is locked only if
 * the worker itself made the first call, so the pool manager should leave
 * initialisation to its workers.
 *
 * Returns KW_OK, or KW_EINTERNAL when the runtime libgcrypt is older than
 * the headers we were built against or refuses initialisation.
 */
enum kw_err
kw_crypto_init(void)
{
	if (initialised)
		return KW_OK;
	if (gcry_control(GCRYCTL_INITIALIZATION_FINISHED_P)) {
		initialised = 1;
		return KW_OK;
	}
	/*
	 * Random bytes from the kernel's generator (getrandom(2)), through
	 * libgcrypt's "system" RNG: its standard CSPRNG mixes its whole pool
	 * on every call, 130000 instructions a key, a third of what making a
	 * key costs.  Must precede gcry_check_version.
	 */
	gcry_control(GCRYCTL_SET_PREFERRED_RNG_TYPE, GCRY_RNG_TYPE_SYSTEM);
	if (gcry_check_version(GCRYPT_VERSION) == NULL)
		return KW_EINTERNAL;
	gcry_control(GCRYCTL_DISABLE_SECMEM_WARN);
	/* Must precede INIT_SECMEM; without it the RNG pools are ordinary heap. */
	gcry_control(GCRYCTL_USE_SECURE_RNDPOOL);
	/* A non-zero result only means "not locked"; see above. */
	(void)gcry_control(GCRYCTL_INIT_SECMEM, SECMEM_POOL, 0);
	if (gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0) != 0)
		return KW_EINTERNAL;
	initialised = 1;
	return KW_OK;
}

/*
 * Fills buf with n bytes from libgcrypt at GCRY_STRONG_RANDOM, the level
 * meant for session keys and tokens (the system RNG: the kernel's).  Cannot fail: libgcrypt
 * terminates the process rather than return weak bytes.
 */
void
kw_crypto_random(void *buf, size_t n)
{
	if (n > 0)
		gcry_randomize(buf, n, GCRY_STRONG_RANDOM);
}

/*
 * Fills buf with n unpredictable bytes that need not be secret (ids, a
 * random choice): libgcrypt's nonce generator, which, unlike
 * GCRY_STRONG_RANDOM, does not poll the system for entropy (getrusage,
 * getpid, clock_gettime) on each call.
 */
void
kw_crypto_nonce(void *buf, size_t n)
{
	if (n > 0)
		gcry_create_nonce(buf, n);
}

/*
 * Writes a random UUID v4 (RFC 9562), lower-case, into out: the id of a
 * record created without one, or of a request (kw_crypto_nonce's bytes).
 */
void
kw_uuid4(char out[37])
{
	static const unsigned char dash_after[] = { 4, 6, 8, 10 };
	unsigned char b[16];
	char *o = out;

	kw_crypto_nonce(b, sizeof(b));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);	/* version 4 */
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);	/* variant 10 */
	for (size_t i = 0, d = 0; i < sizeof(b); i++) {
		if (d < sizeof(dash_after) && i == dash_after[d]) {
			*o++ = '-';
			d++;
		}
		kw_crypto_hex(&b[i], 1, o);
		o += 2;
	}
	*o = '\0';
}

/* Writes the SHA-256 digest of data[0..n) to out.  data may be NULL when n is 0. */
void
kw_crypto_sha256(const void *data, size_t n, unsigned char out[KW_SHA256_LEN])
{
	gcry_md_hash_buffer(GCRY_MD_SHA256, out, n > 0 ? data : "", n);
}

/*
 * Writes the SHA-256 digest of data[0..n) to out as 64 lowercase hex
 * digits and a NUL.
 */
void
kw_crypto_sha256_hex(const void *data, size_t n, char out[KW_SHA256_HEX_LEN + 1])
{
	unsigned char md[KW_SHA256_LEN];

	kw_crypto_sha256(data, n, md);
	kw_crypto_hex(md, sizeof md, out);
	kw_crypto_wipe(md, sizeof md);
}

/*
 * Hex digit for a nibble, without a branch or table lookup on the value
 * (the input is often a key): 48 + x, plus 39 more when x >= 10.
 */
static char
hex_digit(unsigned x)
{
	return (char)(48 + x + (39 & ~((x - 10) >> 8)));
}

/*
 * Writes data[0..n) to out as 2n lowercase hex digits and a NUL; out must
 * hold 2n + 1 bytes.  Runs in time independent of the data.
 */
void
kw_crypto_hex(const unsigned char *data, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hex_digit(data[i] >> 4);
		out[2 * i + 1] = hex_digit(data[i] & 0xf);
	}
	out[2 * n] = '\0';
}

/*
 * Value of one hex digit, upper or lower case, with *bad set to a non-zero
 * value when c is not one; branch-free so that decoding a key leaks nothing
 * through timing.  Masks are all-ones (0xff) for true and 0 for false; num
 * and alpha stay within 0..255 so that bits 8 and up of a difference are
 * set exactly when it went negative.
 */
static unsigned
hex_value(unsigned char c, unsigned *bad)
{
	unsigned num = c ^ 48u;				/* '0'..'9' -> 0..9 */
	unsigned num_ok = ((num - 10) >> 8) & 0xff;	/* num < 10 */
	unsigned alpha = ((c & ~32u) - 55) & 0xff;	/* 'A'..'F', 'a'..'f' -> 10..15 */
	unsigned alpha_ok = (((alpha - 10) ^ (alpha - 16)) >> 8) & 0xff;

	*bad |= ~(num_ok | alpha_ok) & 0xff;
	return (num_ok & num) | (alpha_ok & alpha);
}

/*
 * Decodes hex[0..hexlen), upper or lower case, into exactly hexlen / 2
 * bytes at out; hex need not be NUL-terminated.  Returns KW_OK, or
 * KW_EINVAL when hexlen is odd (nothing written) or a character is not a
 * hex digit (out[0..hexlen/2) zeroed, so no half-decoded secret remains).
 * The whole input is always read, in time independent of its content.
 */
enum kw_err
kw_crypto_unhex(const char *hex, size_t hexlen, unsigned char *out)
{
	const unsigned char *s = (const unsigned char *)hex;
	unsigned bad = 0;
	size_t i;

	if (hexlen % 2 != 0)
		return KW_EINVAL;
	for (i = 0; i < hexlen / 2; i++) {
		unsigned hi = hex_value(s[2 * i], &bad);
		unsigned lo = hex_value(s[2 * i + 1], &bad);

		out[i] = (unsigned char)(hi << 4 | lo);
	}
	if (bad) {
		kw_crypto_wipe(out, hexlen / 2);
		return KW_EINVAL;
	}
	return KW_OK;
}

/*
 * Writes HMAC-SHA256(key, msg[0..n)) to out.  key and msg may be NULL when
 * their lengths are 0.  Returns KW_OK, or KW_EINTERNAL if libgcrypt fails
 * (then out is zeroed).  Borrows everything; holds nothing afterwards.
 */
enum kw_err
kw_crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
    unsigned char out[KW_SHA256_LEN])
{
	gcry_mac_hd_t h = NULL;
	size_t outlen = KW_SHA256_LEN;
	enum kw_err rc = KW_EINTERNAL;

	if (gcry_mac_open(&h, GCRY_MAC_HMAC_SHA256, 0, NULL) != 0) {
		h = NULL;
		goto out;
	}
	if (gcry_mac_setkey(h, keylen > 0 ? key : "", keylen) != 0)
		goto out;
	if (n > 0 && gcry_mac_write(h, msg, n) != 0)
		goto out;
	if (gcry_mac_read(h, out, &outlen) != 0 || outlen != KW_SHA256_LEN)
		goto out;
	rc = KW_OK;
out:
	if (h != NULL)
		gcry_mac_close(h);	/* libgcrypt wipes the key state */
	if (rc != KW_OK)
		kw_crypto_wipe(out, KW_SHA256_LEN);
	return rc;
}

/*
 * Returns 1 when mac is HMAC-SHA256(key, msg[0..n)), compared in constant
 * time, and 0 otherwise, including when the MAC cannot be computed, so a
 * failure never authenticates anything.
 */
int
kw_crypto_hmac_verify(const void *key, size_t keylen, const void *msg, size_t n,
    const unsigned char mac[KW_SHA256_LEN])
{
	unsigned char want[KW_SHA256_LEN];
	int match = 0;

	if (kw_crypto_hmac_sha256(key, keylen, msg, n, want) == KW_OK)
		match = kw_crypto_ct_equal(want, mac, KW_SHA256_LEN);
	kw_crypto_wipe(want, sizeof want);
	return match;
}

/*
 * Opens an AES-256-GCM handle keyed with key and with the given nonce, and
 * feeds it the additional data.  Returns KW_OK with *hp set (the caller
 * must gcry_cipher_close it) or KW_EINTERNAL with *hp NULL.
 */
static enum kw_err
gcm_start(gcry_cipher_hd_t *hp, const unsigned char key[KW_AEAD_KEY_LEN],
    const unsigned char nonce[KW_AEAD_NONCE_LEN], const void *aad, size_t aadlen)
{
	gcry_cipher_hd_t h = NULL;
	enum kw_err rc = KW_EINTERNAL;

	*hp = NULL;
	if (gcry_cipher_open(&h, GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_GCM, 0) != 0) {
		h = NULL;
		goto out;
	}
	if (gcry_cipher_setkey(h, key, KW_AEAD_KEY_LEN) != 0)
		goto out;
	if (gcry_cipher_setiv(h, nonce, KW_AEAD_NONCE_LEN) != 0)
		goto out;
	if (aadlen > 0 && gcry_cipher_authenticate(h, aad, aadlen) != 0)
		goto out;
	*hp = h;
	h = NULL;
	rc = KW_OK;
out:
	if (h != NULL)
		gcry_cipher_close(h);
	return rc;
}

/*
 * Encrypts and authenticates plain[0..n) under key with AES-256-GCM, also
 * authenticating aad[0..aadlen) (not stored; the opener must supply the
 * same bytes).  Writes nonce(12) || ciphertext(n) || tag(16) to out, which
 * must hold n + KW_AEAD_OVERHEAD bytes and must not overlap plain.  The
 * nonce is fresh random, so one key must not seal more than 2^32 records
 * (NIST SP 800-38D, 8.3).  Returns KW_OK; KW_EINVAL if n + the overhead
 * overflows size_t; KW_EINTERNAL if libgcrypt fails, and then out is
 * zeroed.  Borrows everything.
 */
enum kw_err
kw_crypto_seal(const unsigned char key[KW_AEAD_KEY_LEN], const void *aad,
    size_t aadlen, const void *plain, size_t n, unsigned char *out)
{
	gcry_cipher_hd_t h = NULL;
	unsigned char *ct = out + KW_AEAD_NONCE_LEN;
	enum kw_err rc;

	if (n > SIZE_MAX - KW_AEAD_OVERHEAD)
		return KW_EINVAL;
	kw_crypto_random(out, KW_AEAD_NONCE_LEN);
	rc = gcm_start(&h, key, out, aad, aadlen);
	if (rc != KW_OK)
		goto out;
	rc = KW_EINTERNAL;
	if (n > 0 && gcry_cipher_encrypt(h, ct, n, plain, n) != 0)
		goto out;
	if (gcry_cipher_gettag(h, ct + n, KW_AEAD_TAG_LEN) != 0)
		goto out;
	rc = KW_OK;
out:
	if (h != NULL)
		gcry_cipher_close(h);	/* libgcrypt wipes the key schedule */
	if (rc != KW_OK)
		kw_crypto_wipe(out, n + KW_AEAD_OVERHEAD);
	return rc;
}

/*
 * Inverts kw_crypto_seal: checks and decrypts sealed[0..n), laid out as
 * nonce || ciphertext || tag, with aad[0..aadlen), writing
 * n - KW_AEAD_OVERHEAD bytes to plain (which must not overlap sealed).
 * Returns KW_OK; KW_EINVAL when n is shorter than the overhead or the tag
 * does not verify (wrong key, wrong aad, or any altered byte);
 * KW_EINTERNAL if libgcrypt fails.  On any error plain is zeroed, so
 * unauthenticated plaintext never reaches the caller.  Callers opening
 * stored records should treat KW_EINVAL as corruption or a wrong master
 * key, not as a bad request.
 */
enum kw_err
kw_crypto_open(const unsigned char key[KW_AEAD_KEY_LEN], const void *aad,
    size_t aadlen, const unsigned char *sealed, size_t n, unsigned char *plain)
{
	gcry_cipher_hd_t h = NULL;
	const unsigned char *ct = sealed + KW_AEAD_NONCE_LEN;
	size_t ctlen;
	gcry_error_t gerr;
	enum kw_err rc;

	if (n < KW_AEAD_OVERHEAD)
		return KW_EINVAL;
	ctlen = n - KW_AEAD_OVERHEAD;
	rc = gcm_start(&h, key, sealed, aad, aadlen);
	if (rc != KW_OK)
		goto out;
	rc = KW_EINTERNAL;
	if (ctlen > 0 && gcry_cipher_decrypt(h, plain, ctlen, ct, ctlen) != 0)
		goto out;
	/* checktag compares in constant time. */
	gerr = gcry_cipher_checktag(h, ct + ctlen, KW_AEAD_TAG_LEN);
	if (gerr != 0) {
		if (gcry_err_code(gerr) == GPG_ERR_CHECKSUM)
			rc = KW_EINVAL;
		goto out;
	}
	rc = KW_OK;
out:
	if (h != NULL)
		gcry_cipher_close(h);
	if (rc != KW_OK)
		kw_crypto_wipe(plain, ctlen);
	return rc;
}

/*
 * Returns 1 when a[0..n) equals b[0..n), 0 otherwise, reading every byte
 * whatever the content so that the time taken says nothing about where
 * they differ.  Returns 1 for n == 0.
 */
int
kw_crypto_ct_equal(const void *a, const void *b, size_t n)
{
	const volatile unsigned char *pa = a;
	const volatile unsigned char *pb = b;
	unsigned diff = 0;
	size_t i;

	for (i = 0; i < n; i++)
		diff |= pa[i] ^ pb[i];
	/* diff is 0..255: (diff - 1) >> 8 has bit 0 set only for diff == 0. */
	return (int)(1 & ((diff - 1) >> 8));
}

/*
 * Returns 1 when the strings presented and secret are equal, comparing
 * their SHA-256 hashes in constant time, so that neither the time taken nor
 * the lengths say how much of a guess was right.
 */
int
kw_crypto_same_secret(const char *presented, const char *secret)
{
	unsigned char a[KW_SHA256_LEN], b[KW_SHA256_LEN];
	int same;

	kw_crypto_sha256(presented, strlen(presented), a);
	kw_crypto_sha256(secret, strlen(secret), b);
	same = kw_crypto_ct_equal(a, b, sizeof(a));
	kw_crypto_wipe(b, sizeof(b));
	return same;
}

/*
 * Zeroes buf[0..n) in a way the compiler may not elide even when buf is
 * about to go out of scope or be freed.  buf may be NULL when n is 0.
 */
void
kw_crypto_wipe(void *buf, size_t n)
{
	if (n > 0)
		explicit_bzero(buf, n);
}

/*
 * All-ones (0xff) when a < b, else 0, for a, b < 256 and without a
 * branch.
 */
static unsigned
lt_mask(unsigned a, unsigned b)
{
	return ((a - b) >> 8) & 0xff;
}

/*
 * The base64url character (RFC 4648, section 5) for a 6-bit value,
 * computed without a table lookup indexed by the value, since the input is
 * usually a token.
 */
static char
b64url_char(unsigned x)
{
	unsigned upper = lt_mask(x, 26);
	unsigned lower = ~upper & lt_mask(x, 52);
	unsigned digit = ~lt_mask(x, 52) & lt_mask(x, 62);
	unsigned dash = ~lt_mask(x, 62) & lt_mask(x, 63);
	unsigned under = ~lt_mask(x, 63) & 0xff;

	return (char)((upper & (x + 'A')) | (lower & (x - 26 + 'a')) |
	    (digit & (x - 52 + '0')) | (dash & '-') | (under & '_'));
}

/*
 * Writes data[0..n) to out as base64url without padding (RFC 4648,
 * section 5, "=" stripped) and a NUL.  out must hold
 * 4 * (n / 3) + (n % 3 ? n % 3 + 1 : 0) + 1 bytes, which is at most
 * 4 * ((n + 2) / 3) + 1.  Returns the number of characters written, not
 * counting the NUL.  Runs in time independent of the data.
 */
size_t
kw_crypto_b64url(const void *data, size_t n, char *out)
{
	const unsigned char *p = data;
	size_t i, o = 0;

	for (i = 0; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		out[o++] = b64url_char(v >> 18);
		out[o++] = b64url_char((v >> 12) & 0x3f);
		out[o++] = b64url_char((v >> 6) & 0x3f);
		out[o++] = b64url_char(v & 0x3f);
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;

		out[o++] = b64url_char(v >> 18);
		out[o++] = b64url_char((v >> 12) & 0x3f);
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;

		out[o++] = b64url_char(v >> 18);
		out[o++] = b64url_char((v >> 12) & 0x3f);
		out[o++] = b64url_char((v >> 6) & 0x3f);
	}
	out[o] = '\0';
	return o;
}
