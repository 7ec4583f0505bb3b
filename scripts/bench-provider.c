/*
 * bench-provider.c: a fake OpenAI-compatible provider, fast enough that a
 * benchmark measures what is in front of it: POST .../chat/completions
 * answers a fixed completion with its usage, or, when the body asks for
 * "stream": true, the same as server-sent events (chat.completion.chunk
 * events, a usage event, then data: [DONE]) in chunked encoding; GET
 * .../models lists one model.  HTTP/1.1 with keep-alive, a thread per
 * connection, no TLS.
 *
 * Usage: bench-provider [-p PORT] [-d DELAY_MS] [-c CHUNKS]
 *   -p  the port on 127.0.0.1 (0, the default, picks one); the port is
 *       printed on standard output once it listens
 *   -d  how long a call takes: a plain answer comes after it, a stream's
 *       first event at once and the others spread over it (0)
 *   -c  content events in a stream (8)
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long delay_ms;
static int chunks = 8;

#define REQ_MAX (256 << 10)	/* a request, headers and body */

static const char completion[] =
    "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,"
    "\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"a fixed answer from the bench provider\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":8,\"total_tokens\":20}}";

static const char chunk_event[] =
    "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"token \"},\"finish_reason\":null}]}\n\n";

static const char last_events[] =
    "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,"
    "\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
    "\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":8,\"total_tokens\":20}}\n\n"
    "data: [DONE]\n\n";

static const char models[] =
    "{\"object\":\"list\",\"data\":[{\"id\":\"bench-model\",\"object\":\"model\","
    "\"created\":1700000000,\"owned_by\":\"bench\"}]}";

static void
sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int
send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One chunk of chunked encoding, sent at once (TCP_NODELAY is on). */
static int
send_chunk(int fd, const char *p, size_t n)
{
	char buf[8192];
	int len = snprintf(buf, sizeof(buf), "%zx\r\n%.*s\r\n", n, (int)n, p);

	return len > 0 && (size_t)len < sizeof(buf) ? send_all(fd, buf, (size_t)len) : -1;
}

static int
answer(int fd, int status, const char *type, const char *body)
{
	char head[512];
	int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\nx-request-id: bench\r\n\r\n", status,
	    status == 200 ? "OK" : "Not Found", type, strlen(body));

	return send_all(fd, head, (size_t)n) == 0 ? send_all(fd, body, strlen(body)) : -1;
}

static int
stream(int fd)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
	    "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";

	if (send_all(fd, head, sizeof(head) - 1) != 0)
		return -1;
	for (int i = 0; i < chunks; i++) {
		if (i > 0)
			sleep_ms(delay_ms / chunks);
		if (send_chunk(fd, chunk_event, sizeof(chunk_event) - 1) != 0)
			return -1;
	}
	sleep_ms(delay_ms / chunks);
	if (send_chunk(fd, last_events, sizeof(last_events) - 1) != 0)
		return -1;
	return send_all(fd, "0\r\n\r\n", 5);
}

/* Whether the JSON body asks for a stream: "stream" followed by true. */
static int
wants_stream(const char *body)
{
	const char *p = strstr(body, "\"stream\"");

	if (p == NULL)
		return 0;
	for (p += 8; *p == ' ' || *p == ':' || *p == '\t'; p++)
		;
	return strncmp(p, "true", 4) == 0;
}

static void *
serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char *buf = malloc(REQ_MAX + 1);
	size_t have = 0;

	while (buf != NULL) {
		char *end, *cl, method[16] = "", path[1024] = "";
		size_t head, len = 0;
		ssize_t r;

		buf[have] = '\0';
		while ((end = strstr(buf, "\r\n\r\n")) == NULL) {
			if (have == REQ_MAX || (r = recv(fd, buf + have, REQ_MAX - have, 0)) <= 0)
				goto out;
			have += (size_t)r;
			buf[have] = '\0';
		}
		head = (size_t)(end - buf) + 4;
		*end = '\0';
		if ((cl = strcasestr(buf, "\r\ncontent-length:")) != NULL)
			len = strtoul(cl + 17, NULL, 10);
		if (len > REQ_MAX - head || sscanf(buf, "%15s %1023s", method, path) != 2)
			goto out;
		while (have < head + len) {
			if ((r = recv(fd, buf + have, REQ_MAX - have, 0)) <= 0)
				goto out;
			have += (size_t)r;
		}
		buf[head + len] = '\0';
		if (strcmp(method, "POST") == 0 && strstr(path, "/completions") != NULL) {
			if (wants_stream(buf + head)) {
				if (stream(fd) != 0)
					goto out;
			} else {
				sleep_ms(delay_ms);
				if (answer(fd, 200, "application/json", completion) != 0)
					goto out;
			}
		} else if (strcmp(method, "GET") == 0 && strstr(path, "/models") != NULL) {
			if (answer(fd, 200, "application/json", models) != 0)
				goto out;
		} else if (answer(fd, 404, "application/json",
		    "{\"error\":{\"message\":\"not found\",\"type\":\"invalid_request_error\"}}") != 0) {
			goto out;
		}
		memmove(buf, buf + head + len, have - head - len);
		have -= head + len;
	}
out:
	free(buf);
	close(fd);
	return NULL;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t slen = sizeof(sin);
	int opt, lfd, one = 1;
	long port = 0;

	while ((opt = getopt(argc, argv, "p:d:c:")) != -1) {
		switch (opt) {
		case 'p':
			port = strtol(optarg, NULL, 10);
			break;
		case 'd':
			delay_ms = strtol(optarg, NULL, 10);
			break;
		case 'c':
			chunks = (int)strtol(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: bench-provider [-p PORT] [-d DELAY_MS] [-c CHUNKS]\n");
			return 2;
		}
	}
	if (port < 0 || port > 65535 || delay_ms < 0 || chunks < 1) {
		fprintf(stderr, "bench-provider: bad argument\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	sin.sin_port = htons((unsigned short)port);
	if ((lfd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
	    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(lfd, 4096) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &slen) != 0) {
		perror("bench-provider: listen");
		return 1;
	}
	printf("%d\n", ntohs(sin.sin_port));
	fflush(stdout);
	for (;;) {
		pthread_attr_t attr;
		pthread_t t;
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
				continue;
			perror("bench-provider: accept");
			return 1;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		if (pthread_create(&t, &attr, serve, (void *)(intptr_t)fd) != 0)
			close(fd);
		pthread_attr_destroy(&attr);
	}
}
