/* fuzz_control_frame: the control protocol's parsers (common/proto.c) on bytes from a client.
 *
 * The input is what a client might write to the daemon's socket. The harness feeds it to
 * proto_parse_header() and, when the header is accepted, the announced payload (as much as the
 * input holds) to proto_parse_payload(), and checks the documented contract:
 *   - a header is accepted only with magic "EC", version PROTO_VERSION, a known type and a length
 *     no larger than PROTO_FRAME_MAX;
 *   - an accepted payload is a JSON object; serializing it and parsing that again gives an equal
 *     object (nothing is lost or invented);
 *   - a refusal comes with an err_detail() message.
 * It also pushes the whole input through a real socketpair with proto_recv(), which must agree
 * with the in-memory parsers and never block (the input is written and the writer closed first).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum proto_frame_type type = 0;
	uint32_t len = 0;
	json_t *j = NULL, *j2 = NULL;
	int hr = -EPROTO, pr = -EBADMSG, sv[2], rr, fd = -1;
	char *text;

	if (size >= PROTO_HEADER_LEN) {
		err_clear();
		hr = proto_parse_header(data, &type, &len);
		if (hr == 0) {
			FUZZ_CHECK(data[0] == 'E' && data[1] == 'C' && data[2] == PROTO_VERSION);
			FUZZ_CHECK(type >= PROTO_REQUEST && type <= PROTO_PARTIAL);
			FUZZ_CHECK(len <= PROTO_FRAME_MAX && len == get_be32(data + 4));
		} else {
			FUZZ_CHECK(hr == -EPROTO || hr == -EMSGSIZE);
			FUZZ_CHECK(err_detail()[0] != '\0');
		}
	}
	if (hr == 0 && size - PROTO_HEADER_LEN >= len) {
		err_clear();
		pr = proto_parse_payload(data + PROTO_HEADER_LEN, len, &j);
		if (pr == 0) {
			FUZZ_CHECK(json_is_object(j));
			text = json_dumps(j, JSON_COMPACT);
			FUZZ_CHECK(text != NULL);
			FUZZ_CHECK(proto_parse_payload(text, strlen(text), &j2) == 0);
			FUZZ_CHECK(json_equal(j, j2));
			free(text);
			json_decref(j2);
		} else {
			FUZZ_CHECK(pr == -EBADMSG && err_detail()[0] != '\0');
		}
	}

	/* The same bytes through a socket. The kernel buffer of a socketpair holds far more than
	 * libFuzzer's default input size, so the write completes before the read starts. */
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	if (size <= 64 * 1024) {
		FUZZ_CHECK(write(sv[1], data, size) == (ssize_t)size);
		close(sv[1]);
		json_t *got = NULL;

		rr = proto_recv(sv[0], 1000, &type, &got, &fd);
		if (size == 0)
			FUZZ_CHECK(rr == -ECONNRESET);
		else if (hr != 0 && size >= PROTO_HEADER_LEN)
			FUZZ_CHECK(rr == hr);
		else if (hr == 0 && size - PROTO_HEADER_LEN < len)
			FUZZ_CHECK(rr == -EPROTO);
		else if (hr == 0)
			FUZZ_CHECK(rr == pr && (rr != 0 || json_equal(got, j)));
		else
			FUZZ_CHECK(rr == -EPROTO);   /* closed inside a header */
		FUZZ_CHECK(fd == -1);
		json_decref(got);
	} else {
		close(sv[1]);
	}
	close(sv[0]);
	json_decref(j);
	return 0;
}
