/*
 * bench-load.c: HTTP/1.1 keep-alive load generator for scripts/bench, one
 * pthread per connection.  It sends one request for SECS seconds, or with
 * -n COUNT until COUNT requests have been sent (SECS then bounds the time),
 * which is how scripts/bench stores its keys through POST /key/generate.
 * With -l FILE it also writes every latency there (microseconds, native
 * uint32), so that scripts/bench can merge the slices of a round.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct worker {
	pthread_t tid;
	uint32_t *lat_us; /* latency of each completed request, microseconds */
	size_t n, cap;
	long ok, non2xx, errors, status[600];
};

static int port;
static char req[8192];
static size_t req_len;
static double deadline;
static int counted;   /* -n was given */
static long remaining; /* with -n: requests left to send (below 0 once all are taken) */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int dial(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends the request and reads one whole response: its status, or -1 on a
 * broken connection.  *keep is cleared when the server closes after it. */
static int exchange(int fd, int *keep)
{
	static __thread char buf[65536];
	size_t got = 0, want = 0;
	char *end = NULL;
	int status = -1, chunked = 0;

	for (size_t off = 0; off < req_len;) {
		ssize_t w = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
		if (w <= 0)
			return -1;
		off += (size_t)w;
	}
	for (;;) {
		ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
		if (r <= 0)
			return -1;
		got += (size_t)r;
		buf[got] = '\0';
		if (!end && (end = strstr(buf, "\r\n\r\n"))) {
			char *cl = strcasestr(buf, "\r\nContent-Length:");
			if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
				return -1;
			*keep = !strcasestr(buf, "\r\nConnection: close");
			chunked = strcasestr(buf, "\r\nTransfer-Encoding: chunked") != NULL;
			if (cl && cl < end)
				want = (size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10);
			else if (!chunked)
				return -1; /* no length: not a response keywarden sends */
		}
		if (end && !chunked && got >= want)
			return status;
		if (end && chunked && got >= 5 && !memcmp(buf + got - 5, "0\r\n\r\n", 5))
			return status;
		if (got == sizeof buf - 1)
			return -1;
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;
	int fd = -1, keep = 1;

	while (now() < deadline) {
		if (fd < 0 && (fd = dial()) < 0) {
			w->errors++;
			usleep(10000);
			continue;
		}
		/* with -n, take one of the requests left; none left ends the thread */
		if (counted && __atomic_sub_fetch(&remaining, 1, __ATOMIC_RELAXED) < 0)
			break;
		double t0 = now();
		int status = exchange(fd, &keep);
		if (status < 0 || !keep) {
			close(fd);
			fd = -1;
		}
		if (status < 100 || status > 599) {
			w->errors++;
			continue;
		}
		if (w->n == w->cap) {
			w->cap = w->cap ? 2 * w->cap : 4096;
			if (!(w->lat_us = realloc(w->lat_us, w->cap * sizeof *w->lat_us))) {
				perror("realloc");
				exit(1);
			}
		}
		w->lat_us[w->n++] = (uint32_t)((now() - t0) * 1e6);
		w->status[status]++;
		if (status >= 200 && status < 300)
			w->ok++;
		else
			w->non2xx++;
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	const char *lat_file = NULL;

	while (argc > 2 && (strcmp(argv[1], "-n") == 0 || strcmp(argv[1], "-l") == 0)) {
		if (argv[1][1] == 'l') {
			lat_file = argv[2];
		} else {
			char *end;
			counted = 1;
			remaining = strtol(argv[2], &end, 10);
			if (*end || remaining < 1) {
				fprintf(stderr, "bench-load: -n takes a count of requests\n");
				return 2;
			}
		}
		argv += 2;
		argc -= 2;
	}
	if (argc < 6 || argc > 8) {
		fprintf(stderr, "usage: %s [-n COUNT] [-l FILE] PORT SECS CONNS METHOD PATH [BEARER [BODY]]\n",
			argv[0]);
		return 2;
	}
	port = atoi(argv[1]);
	double secs = atof(argv[2]);
	int conns = atoi(argv[3]);
	const char *body = argc > 7 ? argv[7] : NULL;
	int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", argv[4], argv[5]);
	if (argc > 6 && argv[6][0])
		n += snprintf(req + n, sizeof req - n, "Authorization: Bearer %s\r\n", argv[6]);
	if (body)
		n += snprintf(req + n, sizeof req - n,
			      "Content-Type: application/json\r\nContent-Length: %zu\r\n", strlen(body));
	n += snprintf(req + n, sizeof req - n, "\r\n%s", body ? body : "");
	if (conns < 1 || secs <= 0 || n >= (int)sizeof req) {
		fprintf(stderr, "bench-load: bad arguments\n");
		return 2;
	}
	req_len = (size_t)n;

	struct worker *ws = calloc((size_t)conns, sizeof *ws);
	double start = now();
	deadline = start + secs;
	for (int i = 0; i < conns; i++)
		if ((errno = pthread_create(&ws[i].tid, NULL, run, &ws[i]))) {
			perror("pthread_create");
			return 1;
		}
	struct worker all = { 0 };
	for (int i = 0; i < conns; i++) {
		pthread_join(ws[i].tid, NULL);
		all.ok += ws[i].ok;
		all.non2xx += ws[i].non2xx;
		all.errors += ws[i].errors;
		for (int s = 0; s < 600; s++)
			all.status[s] += ws[i].status[s];
		all.lat_us = realloc(all.lat_us, (all.n + ws[i].n + 1) * sizeof *all.lat_us);
		memcpy(all.lat_us + all.n, ws[i].lat_us, ws[i].n * sizeof *all.lat_us);
		all.n += ws[i].n;
		free(ws[i].lat_us);
	}
	double elapsed = now() - start;
	if (lat_file) {
		FILE *f = fopen(lat_file, "wb");
		if (!f || fwrite(all.lat_us, sizeof *all.lat_us, all.n, f) != all.n || fclose(f)) {
			perror(lat_file);
			return 1;
		}
	}
	qsort(all.lat_us, all.n, sizeof *all.lat_us, cmp_u32);
	double p50 = all.n ? all.lat_us[all.n / 2] / 1e3 : 0;
	double p99 = all.n ? all.lat_us[all.n * 99 / 100] / 1e3 : 0;

	/* one line of key=value pairs for scripts/bench */
	printf("requests=%zu ok=%ld non2xx=%ld errors=%ld secs=%.3f p50_ms=%.3f p99_ms=%.3f statuses=",
	       all.n, all.ok, all.non2xx, all.errors, elapsed, p50, p99);
	const char *sep = "";
	for (int s = 100; s < 600; s++)
		if (all.status[s]) {
			printf("%s%d:%ld", sep, s, all.status[s]);
			sep = ",";
		}
	printf("\n");
	free(all.lat_us);
	free(ws);
	return 0;
}
