/*
 * bench-authz-null.c: a FastCGI authorizer that admits every request, for
 * scripts/bench: the transport's limit that keywarden's authorizer is
 * measured against.  lighttpd starts it (bin-path) with the listening socket
 * on fd 0, as it starts keywarden; one process, one request at a time.
 */
#include <fcgiapp.h>

int main(void)
{
	FCGX_Request req;

	if (FCGX_Init() != 0 || FCGX_InitRequest(&req, 0, 0) != 0)
		return 1;
	while (FCGX_Accept_r(&req) >= 0) {
		FCGX_PutS("Status: 200\r\n\r\n", req.out);
		FCGX_Finish_r(&req);
	}
	return 0;
}
