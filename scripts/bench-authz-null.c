/*
 * bench-authz-null.c: a FastCGI program that does no work, for scripts/bench:
 * the transport's limit that keywarden is measured against.  In the
 * AUTHORIZER role it admits every request ("Status: 200", no body); in the
 * RESPONDER role it answers "{}" as application/json, a minimal API answer.
 * lighttpd starts it (bin-path) with the listening socket on fd 0, as it
 * starts keywarden; one process, one request at a time.
 */
#include <fcgiapp.h>
#include <fastcgi.h>

int main(void)
{
	FCGX_Request req;

	if (FCGX_Init() != 0 || FCGX_InitRequest(&req, 0, 0) != 0)
		return 1;
	while (FCGX_Accept_r(&req) >= 0) {
		if (req.role == FCGI_AUTHORIZER)
			FCGX_PutS("Status: 200\r\n\r\n", req.out);
		else
			FCGX_PutS("Status: 200\r\nContent-Type: application/json\r\n\r\n{}", req.out);
		FCGX_Finish_r(&req);
	}
	return 0;
}
