/* test_crypto.c: known answers, tamper refusal and fork behaviour of crypto.c. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kw.h"
#include "tap.h"

/* Decodes a hex literal in a test vector; aborts on a typo in the test itself. */
static size_t
unhex_or_die(const char *hex, unsigned char *out, size_t cap)
{
	size_t len = strlen(hex);

	if (len / 2 > cap || kw_crypto_unhex(hex, len, out) != KW_OK) {
		fprintf(stderr, "bad test vector: %s\n", hex);
		exit(2);
	}
	return len / 2;
}

static void
test_init(void)
{
	is_int(kw_crypto_init(), KW_OK, "init");
	is_int(kw_crypto_init(), KW_OK, "init again is a no-op");
}

static void
test_sha256(void)
{
	unsigned char md[KW_SHA256_LEN];
	char hex[KW_SHA256_HEX_LEN + 1];

	kw_crypto_sha256_hex("", 0, hex);
	is_str(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	    "sha256 of the empty string");
	kw_crypto_sha256_hex(NULL, 0, hex);
	is_str(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	    "sha256 of NULL, 0");
	kw_crypto_sha256_hex("abc", 3, hex);
	is_str(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
	    "sha256 of \"abc\"");
	kw_crypto_sha256("abc", 3, md);
	kw_crypto_hex(md, sizeof md, hex);
	is_str(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
	    "sha256 raw agrees with sha256_hex");
	kw_crypto_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, hex);
	is_str(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
	    "sha256 of the two-block FIPS 180-2 message");
}

/* RFC 4231, section 4. */
static void
test_hmac(void)
{
	unsigned char key[131], mac[KW_SHA256_LEN];
	char hex[2 * KW_SHA256_LEN + 1];
	const char *msg6 = "Test Using Larger Than Block-Size Key - Hash Key First";

	memset(key, 0x0b, 20);
	is_int(kw_crypto_hmac_sha256(key, 20, "Hi There", 8, mac), KW_OK, "hmac case 1 computes");
	kw_crypto_hex(mac, sizeof mac, hex);
	is_str(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
	    "hmac RFC 4231 case 1");
	ok(kw_crypto_hmac_verify(key, 20, "Hi There", 8, mac) == 1, "hmac_verify accepts case 1");

	is_int(kw_crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac), KW_OK,
	    "hmac case 2 computes");
	kw_crypto_hex(mac, sizeof mac, hex);
	is_str(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
	    "hmac RFC 4231 case 2");

	memset(key, 0xaa, sizeof key);
	is_int(kw_crypto_hmac_sha256(key, sizeof key, msg6, strlen(msg6), mac), KW_OK,
	    "hmac case 6 computes");
	kw_crypto_hex(mac, sizeof mac, hex);
	is_str(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
	    "hmac RFC 4231 case 6 (key longer than a block)");
	ok(kw_crypto_hmac_verify(key, sizeof key, msg6, strlen(msg6), mac) == 1,
	    "hmac_verify accepts case 6");
	ok(kw_crypto_hmac_verify(key, sizeof key - 1, msg6, strlen(msg6), mac) == 0,
	    "hmac_verify refuses a different key");
	ok(kw_crypto_hmac_verify(key, sizeof key, msg6, strlen(msg6) - 1, mac) == 0,
	    "hmac_verify refuses a different message");
	mac[KW_SHA256_LEN - 1] ^= 0x01;
	ok(kw_crypto_hmac_verify(key, sizeof key, msg6, strlen(msg6), mac) == 0,
	    "hmac_verify refuses a MAC with its last bit flipped");
	mac[KW_SHA256_LEN - 1] ^= 0x01;
	mac[0] ^= 0x80;
	ok(kw_crypto_hmac_verify(key, sizeof key, msg6, strlen(msg6), mac) == 0,
	    "hmac_verify refuses a MAC with its first bit flipped");

	is_int(kw_crypto_hmac_sha256(NULL, 0, NULL, 0, mac), KW_OK, "hmac with empty key and message");
	kw_crypto_hex(mac, sizeof mac, hex);
	is_str(hex, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
	    "hmac with empty key and message (cross-checked with Python's hmac)");
}

static int
all_zero(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

/* Opens sealed with key and aad into a buffer prefilled with 0xaa; checks it is wiped on refusal. */
static void
expect_refused(const unsigned char *key, const char *aad, const unsigned char *sealed, size_t n,
    const char *name)
{
	unsigned char plain[256];
	size_t plen = n >= KW_AEAD_OVERHEAD ? n - KW_AEAD_OVERHEAD : 0;

	memset(plain, 0xaa, sizeof plain);
	is_int(kw_crypto_open(key, aad, aad ? strlen(aad) : 0, sealed, n, plain), KW_EINVAL, name);
	ok(all_zero(plain, plen), "%s: plaintext buffer wiped", name);
	ok(plain[plen] == 0xaa, "%s: nothing written past the plaintext", name);
}

static void
test_aead_roundtrip(void)
{
	unsigned char key[KW_AEAD_KEY_LEN], key2[KW_AEAD_KEY_LEN];
	unsigned char sealed[64 + KW_AEAD_OVERHEAD], sealed2[64 + KW_AEAD_OVERHEAD];
	unsigned char bad[64 + KW_AEAD_OVERHEAD], plain[64 + 1];
	const char *msg = "sk-keywarden-0123456789abcdef";
	const char *aad = "key:42";
	size_t n = strlen(msg), sn = n + KW_AEAD_OVERHEAD;

	kw_crypto_random(key, sizeof key);
	memcpy(key2, key, sizeof key2);
	key2[7] ^= 0x10;

	is_int(kw_crypto_seal(key, aad, strlen(aad), msg, n, sealed), KW_OK, "seal");
	ok(memcmp(sealed + KW_AEAD_NONCE_LEN, msg, n) != 0, "sealed bytes are not the plaintext");
	memset(plain, 0xaa, sizeof plain);
	is_int(kw_crypto_open(key, aad, strlen(aad), sealed, sn, plain), KW_OK, "open");
	ok(memcmp(plain, msg, n) == 0, "open returns the plaintext");
	ok(plain[n] == 0xaa, "open writes exactly n - KW_AEAD_OVERHEAD bytes");

	is_int(kw_crypto_seal(key, aad, strlen(aad), msg, n, sealed2), KW_OK, "seal again");
	ok(memcmp(sealed, sealed2, KW_AEAD_NONCE_LEN) != 0, "each seal draws a fresh nonce");
	ok(memcmp(sealed + KW_AEAD_NONCE_LEN, sealed2 + KW_AEAD_NONCE_LEN, n) != 0,
	    "so the same plaintext seals differently");

	memcpy(bad, sealed, sn);
	bad[KW_AEAD_NONCE_LEN + 3] ^= 0x01;
	expect_refused(key, aad, bad, sn, "ciphertext bit flipped");
	memcpy(bad, sealed, sn);
	bad[sn - 1] ^= 0x80;
	expect_refused(key, aad, bad, sn, "tag bit flipped");
	memcpy(bad, sealed, sn);
	bad[0] ^= 0x01;
	expect_refused(key, aad, bad, sn, "nonce bit flipped");
	expect_refused(key, "key:43", sealed, sn, "wrong aad");
	expect_refused(key, NULL, sealed, sn, "aad omitted");
	expect_refused(key2, aad, sealed, sn, "wrong key");
	expect_refused(key, aad, sealed, sn - 1, "last byte cut off");
	expect_refused(key, aad, sealed + 1, sn - 1, "first byte cut off");
	expect_refused(key, aad, sealed, KW_AEAD_OVERHEAD - 1, "shorter than the overhead");
	expect_refused(key, aad, sealed, 0, "empty input");
	expect_refused(key, aad, sealed, KW_AEAD_OVERHEAD, "only nonce and a tag that is not one");

	/* Empty plaintext: the record is nothing but nonce and tag. */
	is_int(kw_crypto_seal(key, NULL, 0, NULL, 0, sealed), KW_OK, "seal an empty plaintext");
	is_int(kw_crypto_open(key, NULL, 0, sealed, KW_AEAD_OVERHEAD, plain), KW_OK,
	    "open an empty plaintext");
	expect_refused(key, "x", sealed, KW_AEAD_OVERHEAD, "empty plaintext, aad added");

	/* No aad, 64 bytes: several GCM blocks. */
	kw_crypto_random(plain, 64);
	memcpy(bad, plain, 64);
	is_int(kw_crypto_seal(key, NULL, 0, plain, 64, sealed), KW_OK, "seal 64 bytes, no aad");
	memset(plain, 0, sizeof plain);
	is_int(kw_crypto_open(key, NULL, 0, sealed, 64 + KW_AEAD_OVERHEAD, plain), KW_OK,
	    "open 64 bytes, no aad");
	ok(memcmp(plain, bad, 64) == 0, "64 bytes round trip");
}

/*
 * Known answers through kw_crypto_open, since seal's nonce is random: the
 * vectors are laid out as nonce || ciphertext || tag.  From McGrew and
 * Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 13, 14
 * and 16 (the AES-256 ones with a 96-bit IV).
 */
static void
test_aead_kat(void)
{
	unsigned char key[KW_AEAD_KEY_LEN], sealed[128], plain[128], want[128];
	unsigned char aad[32];
	size_t n, pn, an;

	memset(key, 0, sizeof key);
	n = unhex_or_die("000000000000000000000000" "530f8afbc74536b9a963b4f1c4cb738b", sealed,
	    sizeof sealed);
	is_int(kw_crypto_open(key, NULL, 0, sealed, n, plain), KW_OK,
	    "GCM test case 13 (empty plaintext) opens");

	n = unhex_or_die("000000000000000000000000" "cea7403d4d606b6e074ec5d3baf39d18"
	    "d0d1c8a799996bf0265b98b5d48ab919", sealed, sizeof sealed);
	memset(plain, 0xaa, sizeof plain);
	is_int(kw_crypto_open(key, NULL, 0, sealed, n, plain), KW_OK, "GCM test case 14 opens");
	ok(all_zero(plain, 16) && plain[16] == 0xaa, "GCM test case 14 plaintext");

	unhex_or_die("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key,
	    sizeof key);
	an = unhex_or_die("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad, sizeof aad);
	n = unhex_or_die("cafebabefacedbaddecaf888"
	    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
	    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
	    "76fc6ece0f4e1768cddf8853bb2d551b", sealed, sizeof sealed);
	pn = unhex_or_die("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39", want, sizeof want);
	is_int(n - KW_AEAD_OVERHEAD, pn, "GCM test case 16 lengths agree");
	is_int(kw_crypto_open(key, aad, an, sealed, n, plain), KW_OK, "GCM test case 16 opens");
	ok(memcmp(plain, want, pn) == 0, "GCM test case 16 plaintext");
	is_int(kw_crypto_open(key, aad, an - 1, sealed, n, plain), KW_EINVAL,
	    "GCM test case 16 refused with aad one byte short");
}

static void
test_hex(void)
{
	unsigned char all[256], back[256], out[4];
	char hex[2 * 256 + 1], one[3];
	const unsigned char bytes[] = { 0x00, 0x01, 0xab, 0xff };
	unsigned c;
	int every_digit_right = 1, every_other_refused = 1;
	size_t i;

	kw_crypto_hex(bytes, sizeof bytes, hex);
	is_str(hex, "0001abff", "hex is lowercase");
	kw_crypto_hex(bytes, 0, hex);
	is_str(hex, "", "hex of nothing is the empty string");

	is_int(kw_crypto_unhex("0001ABff", 8, out), KW_OK, "unhex takes either case");
	ok(memcmp(out, bytes, 4) == 0, "unhex value");
	is_int(kw_crypto_unhex("", 0, out), KW_OK, "unhex of nothing");

	for (i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	kw_crypto_hex(all, sizeof all, hex);
	is_int(strlen(hex), 512, "hex writes 2n digits and a NUL");
	is_int(kw_crypto_unhex(hex, 512, back), KW_OK, "unhex of every byte value");
	ok(memcmp(all, back, sizeof all) == 0, "hex/unhex round trip over every byte value");

	/* Every one of the 256 characters, in both positions of a pair. */
	for (c = 0; c < 256; c++) {
		int digit = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		    (c >= 'A' && c <= 'F');
		unsigned value = c <= '9' ? c - '0' : (c | 32) - 'a' + 10;

		one[0] = '0';
		one[1] = (char)c;
		out[0] = 0x55;
		if (digit) {
			if (kw_crypto_unhex(one, 2, out) != KW_OK || out[0] != value)
				every_digit_right = 0;
			one[0] = (char)c;
			one[1] = '0';
			if (kw_crypto_unhex(one, 2, out) != KW_OK || out[0] != value << 4)
				every_digit_right = 0;
		} else {
			if (kw_crypto_unhex(one, 2, out) != KW_EINVAL || out[0] != 0)
				every_other_refused = 0;
			one[0] = (char)c;
			one[1] = '0';
			if (kw_crypto_unhex(one, 2, out) != KW_EINVAL)
				every_other_refused = 0;
		}
	}
	ok(every_digit_right, "unhex decodes each of 0-9 a-f A-F");
	ok(every_other_refused, "unhex refuses each of the other 234 byte values");

	memset(out, 0x55, sizeof out);
	is_int(kw_crypto_unhex("abc", 3, out), KW_EINVAL, "unhex refuses an odd length");
	ok(out[0] == 0x55, "odd length writes nothing");
	is_int(kw_crypto_unhex("0x12", 4, out), KW_EINVAL, "unhex refuses a 0x prefix");
	ok(all_zero(out, 2), "refused input leaves out zeroed");
	is_int(kw_crypto_unhex("12 4", 4, out), KW_EINVAL, "unhex refuses a space");
	is_int(kw_crypto_unhex("1g", 2, out), KW_EINVAL, "unhex refuses g");
	is_int(kw_crypto_unhex("12\0" "4", 4, out), KW_EINVAL, "unhex refuses an embedded NUL");
	is_int(kw_crypto_unhex("abcdXX", 4, out), KW_OK, "unhex reads only hexlen characters");
}

/* A plain table-driven encoder to compare the branch-free one against. */
static size_t
ref_b64url(const unsigned char *p, size_t n, char *out)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t i, o = 0;
	unsigned bits = 0, nbits = 0;

	for (i = 0; i < n; i++) {
		bits = (bits << 8 | p[i]) & 0xffff;
		nbits += 8;
		while (nbits >= 6) {
			out[o++] = abc[(bits >> (nbits - 6)) & 0x3f];
			nbits -= 6;
		}
	}
	if (nbits > 0)
		out[o++] = abc[(bits << (6 - nbits)) & 0x3f];
	out[o] = '\0';
	return o;
}

static void
test_b64url(void)
{
	static const struct {
		const char *in, *out;
	} rfc[] = {
		{ "", "" }, { "f", "Zg" }, { "fo", "Zm8" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg" }, { "fooba", "Zm9vYmE" }, { "foobar", "Zm9vYmFy" },
	};
	unsigned char seq[48], buf[64];
	char out[128], ref[128];
	size_t i, n;
	int same = 1;

	for (i = 0; i < sizeof rfc / sizeof rfc[0]; i++) {
		char name[64];

		n = kw_crypto_b64url(rfc[i].in, strlen(rfc[i].in), out);
		snprintf(name, sizeof name, "b64url(\"%s\") (RFC 4648, section 10)", rfc[i].in);
		is_str(out, rfc[i].out, name);
		is_int(n, strlen(rfc[i].out), "returns the length written");
	}
	n = kw_crypto_b64url("\xfb\xff", 2, out);
	is_str(out, "-_8", "b64url uses - and _ (0xfb 0xff)");
	is_int(n, 3, "length of -_8");
	kw_crypto_b64url("\xfb\xef\xbe", 3, out);
	is_str(out, "----", "0xfb 0xef 0xbe is ----");
	kw_crypto_b64url("\xff\xff\xff", 3, out);
	is_str(out, "____", "0xff 0xff 0xff is ____");

	/* The 6-bit values 0..63 in order, packed into 48 bytes: the whole alphabet. */
	for (i = 0; i < 16; i++) {
		unsigned v = (unsigned)(4 * i) << 18 | (unsigned)(4 * i + 1) << 12 |
		    (unsigned)(4 * i + 2) << 6 | (unsigned)(4 * i + 3);

		seq[3 * i] = (unsigned char)(v >> 16);
		seq[3 * i + 1] = (unsigned char)(v >> 8);
		seq[3 * i + 2] = (unsigned char)v;
	}
	n = kw_crypto_b64url(seq, sizeof seq, out);
	is_str(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
	    "every 6-bit value maps to the base64url alphabet");
	is_int(n, 64, "48 bytes encode to 64 characters");

	for (n = 0; n <= sizeof buf; n++) {
		size_t got;

		kw_crypto_random(buf, n);
		got = kw_crypto_b64url(buf, n, out);
		if (got != ref_b64url(buf, n, ref) || strcmp(out, ref) != 0 ||
		    got != 4 * (n / 3) + (n % 3 ? n % 3 + 1 : 0))
			same = 0;
	}
	ok(same, "b64url agrees with a table-driven encoder for random input of 0..64 bytes");
}

static void
test_ct_equal_wipe(void)
{
	unsigned char a[33], b[33];

	memset(a, 0x5a, sizeof a);
	memset(b, 0x5a, sizeof b);
	is_int(kw_crypto_ct_equal(a, b, sizeof a), 1, "ct_equal: equal buffers");
	is_int(kw_crypto_ct_equal(a, b, 0), 1, "ct_equal: zero length is equal");
	b[0] ^= 0x01;
	is_int(kw_crypto_ct_equal(a, b, sizeof a), 0, "ct_equal: first byte differs");
	b[0] ^= 0x01;
	b[32] ^= 0x80;
	is_int(kw_crypto_ct_equal(a, b, sizeof a), 0, "ct_equal: last byte differs");
	is_int(kw_crypto_ct_equal(a, b, 32), 1, "ct_equal: only n bytes compared");
	b[32] = 0xff;
	a[32] = 0x00;
	is_int(kw_crypto_ct_equal(a, b, sizeof a), 0, "ct_equal: 0x00 against 0xff");

	kw_crypto_wipe(a, 32);
	ok(all_zero(a, 32), "wipe zeroes the buffer");
	ok(a[32] == 0x00 && b[31] == 0x5a, "wipe stays within n");
	kw_crypto_wipe(NULL, 0);
	ok(1, "wipe of NULL, 0 is harmless");
}

static void
test_random(void)
{
	unsigned char a[32], b[32], z[32];

	memset(z, 0, sizeof z);
	kw_crypto_random(a, sizeof a);
	kw_crypto_random(b, sizeof b);
	ok(memcmp(a, b, sizeof a) != 0, "two draws differ");
	ok(memcmp(a, z, sizeof a) != 0, "a draw is not all zeros");
	kw_crypto_random(NULL, 0);
	ok(1, "random of NULL, 0 is harmless");
}

/*
 * Forks a child that calls kw_crypto_init (already done in this process,
 * as when the pool manager initialised before forking) and sends back 32
 * random bytes.  Returns 0 on success.
 */
static int
child_random(unsigned char out[32])
{
	int fd[2], status;
	pid_t pid;
	size_t got = 0;

	if (pipe(fd) != 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		unsigned char r[32];

		close(fd[0]);
		if (kw_crypto_init() != KW_OK)
			_exit(3);
		kw_crypto_random(r, sizeof r);
		_exit(write(fd[1], r, sizeof r) == (ssize_t)sizeof r ? 0 : 4);
	}
	close(fd[1]);
	while (got < 32) {
		ssize_t r = read(fd[0], out + got, 32 - got);

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd[0]);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -1;
	return got == 32 ? 0 : -1;
}

static void
test_fork(void)
{
	unsigned char parent[32], c1[32], c2[32];

	/* The pool is already in use, so each child starts from a copy of it. */
	kw_crypto_random(parent, sizeof parent);
	is_int(child_random(c1), 0, "first child: init and random succeed");
	is_int(child_random(c2), 0, "second child: init and random succeed");
	kw_crypto_random(parent, sizeof parent);
	ok(memcmp(parent, c1, 32) != 0, "first child's bytes differ from the parent's");
	ok(memcmp(parent, c2, 32) != 0, "second child's bytes differ from the parent's");
	ok(memcmp(c1, c2, 32) != 0, "the two children's bytes differ");
}

/* RFC 9562's layout, lower-case hex, and a fresh id each call, in a child process too. */
static void
test_uuid4(void)
{
	char a[37], b[37];
	int shape = 1;

	memset(a, 'x', sizeof a);
	kw_uuid4(a);
	kw_uuid4(b);
	for (int i = 0; i < 36; i++) {
		int dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? a[i] != '-' : !strchr("0123456789abcdef", a[i]) || a[i] == '\0')
			shape = 0;
	}
	ok(shape && a[36] == '\0', "uuid4: 8-4-4-4-12 lower-case hex digits (%s)", a);
	ok(a[14] == '4' && strchr("89ab", a[19]) != NULL, "uuid4: version 4, variant 10");
	ok(strcmp(a, b) != 0, "uuid4: two calls differ");
}

int
main(void)
{
	test_init();
	test_sha256();
	test_hmac();
	test_aead_roundtrip();
	test_aead_kat();
	test_hex();
	test_b64url();
	test_ct_equal_wipe();
	test_random();
	test_fork();
	test_uuid4();
	return tap_done();
}
