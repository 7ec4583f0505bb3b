/* main.c: the keywarden command: serve FastCGI (the default), initialise a data directory, rotate the signing key. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcgiapp.h>
#include <json-c/json.h>

#include "kw.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: keywarden [serve] [-s PATH | -p [HOST:]PORT] [-d DATA_DIR] [-w WORKERS]\n"
	    "       keywarden init [-d DATA_DIR]\n"
	    "       keywarden signing-key rotate [-d DATA_DIR]\n"
	    "       keywarden version\n"
	    "\n"
	    "serve  Answer FastCGI requests with a pool of workers (the default).  The\n"
	    "       listening socket is fd 0 when a web server or spawn-fcgi starts\n"
	    "       keywarden; -s listens on a Unix socket, -p on a TCP port (host\n"
	    "       127.0.0.1 unless given).\n"
	    "init   Create the data directory and its secrets; prints a newly\n"
	    "       generated master key once.\n"
	    "signing-key rotate\n"
	    "       A new key signs provisioned tokens from now on; tokens the old\n"
	    "       keys signed verify until they expire.\n"
	    "\n"
	    "Settings come from the environment, then DATA_DIR/keywarden.conf:\n"
	    "KEYWARDEN_DATA_DIR (./var), KEYWARDEN_MASTER_KEY, KEYWARDEN_WORKERS (cores),\n"
	    "KEYWARDEN_MAX_BODY (1048576), KEYWARDEN_LOG_LEVEL (info), KEYWARDEN_MAINTAIN_SECS (60).\n");
}

/* 1 when fd is a listening socket, which is how a web server hands one over. */
static int
is_listening_socket(int fd)
{
	int v = 0;
	socklen_t len = sizeof(v);

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v;
}

/* Opens the socket named by -s or -p; returns its fd or -1. */
static int
open_listener(const char *socket_path, const char *port)
{
	char addr[300];
	int fd;

	if (socket_path != NULL) {
		mode_t old = umask(0117);	/* the socket is rw for owner and group */

		unlink(socket_path);
		fd = FCGX_OpenSocket(socket_path, 128);
		umask(old);
		return fd;
	}
	if (strchr(port, ':') != NULL)
		snprintf(addr, sizeof(addr), "%s", port);
	else
		snprintf(addr, sizeof(addr), "127.0.0.1:%s", port);
	return FCGX_OpenSocket(addr, 128);
}

/* Opens (and, when new, initialises) the store once, so recovery and schema checks run before serving. */
static int
init_store(void)
{
	struct kw_store *st;

	if (kw_store_open(&st, kw_config.data_dir, KW_STORE_RECOVER) != KW_OK) {
		fprintf(stderr, "keywarden: cannot open the store in %s (see the log above)\n",
		    kw_config.data_dir);
		return 1;
	}
	kw_store_close(st);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *cmd = "serve", *socket_path = NULL, *port = NULL, *data_dir = NULL;
	unsigned workers = 0;
	int c, listen_fd, rc;

	if (argc > 1 && argv[1][0] != '-') {
		cmd = argv[1];
		argv++;
		argc--;
	}
	if (strcmp(cmd, "signing-key") == 0 && argc > 1 && strcmp(argv[1], "rotate") == 0) {
		cmd = "signing-key rotate";
		argv++;
		argc--;
	}
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "socket", required_argument, NULL, 's' },
		{ "port", required_argument, NULL, 'p' },
		{ "data-dir", required_argument, NULL, 'd' },
		{ "workers", required_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 },
	};
	while ((c = getopt_long(argc, argv, "hs:p:d:w:", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage(stdout);
			return 0;
		case 's':
			socket_path = optarg;
			break;
		case 'p':
			port = optarg;
			break;
		case 'd':
			data_dir = optarg;
			break;
		case 'w':
			workers = (unsigned)atoi(optarg);
			if (workers < 1 || workers > 256) {
				fprintf(stderr, "keywarden: -w takes 1 to 256\n");
				return 2;
			}
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || (socket_path != NULL && port != NULL)) {
		usage(stderr);
		return 2;
	}
	if (strcmp(cmd, "version") == 0) {
		printf("keywarden %s (schema %d, spec %.12s)\n", KW_VERSION, KW_SCHEMA_VERSION,
		    kw_gen_spec_sha256);
		return 0;
	}
	if (strcmp(cmd, "init") != 0 && strcmp(cmd, "serve") != 0 &&
	    strcmp(cmd, "signing-key rotate") != 0) {
		fprintf(stderr, "keywarden: unknown command %s\n", cmd);
		usage(stderr);
		return 2;
	}
	if (kw_config_load(data_dir) != KW_OK)
		return 1;
	if (workers > 0)
		kw_config.workers = workers;
	if (kw_crypto_init() != KW_OK) {
		fprintf(stderr, "keywarden: libgcrypt failed to initialise\n");
		return 1;
	}
	/* money and counts as people write them: 0.7, not 0.69999999999999996 */
	json_c_set_serialization_double_format("%.15g", JSON_C_OPTION_GLOBAL);
	if (kw_config_init_data_dir(strcmp(cmd, "init") == 0) != KW_OK)
		return 1;
	if (strcmp(cmd, "signing-key rotate") == 0) {
		/* running workers read the new key set at their next signed token */
		rc = kw_tokens_rotate() == KW_OK ? 0 : 1;
		if (rc == 0)
			printf("keywarden: a new signing key signs from now on; the old ones still verify\n");
		else
			fprintf(stderr, "keywarden: cannot rotate the signing key in %s\n",
			    kw_config.data_dir);
		kw_crypto_wipe(kw_config.master_key, sizeof(kw_config.master_key));
		return rc;
	}
	if (strcmp(cmd, "init") == 0) {
		rc = init_store();
		if (rc == 0)
			printf("keywarden: data directory %s is ready\n", kw_config.data_dir);
		kw_crypto_wipe(kw_config.master_key, sizeof(kw_config.master_key));
		return rc;
	}

	if (FCGX_Init() != 0) {
		fprintf(stderr, "keywarden: libfcgi failed to initialise\n");
		return 1;
	}
	if (socket_path != NULL || port != NULL) {
		if ((listen_fd = open_listener(socket_path, port)) < 0) {
			fprintf(stderr, "keywarden: cannot listen on %s: %s\n",
			    socket_path ? socket_path : port, strerror(errno));
			return 1;
		}
	} else if (is_listening_socket(0)) {
		listen_fd = 0;
	} else {
		fprintf(stderr, "keywarden: standard input is not a FastCGI listening socket; "
		    "use -s PATH or -p PORT to listen on one of keywarden's own\n");
		return 2;
	}
	rc = kw_pool_run(listen_fd, kw_config.workers) == KW_OK ? 0 : 1;
	if (socket_path != NULL)
		unlink(socket_path);
	kw_crypto_wipe(kw_config.master_key, sizeof(kw_config.master_key));
	return rc;
}
