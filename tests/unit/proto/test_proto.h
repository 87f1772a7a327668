/* Test groups of the rk_proto unit test binary. */
#ifndef TEST_PROTO_H
#define TEST_PROTO_H

int test_proto_codec_run(void);
int test_proto_status_run(void);

#endif
