/* Unit tests of ringkvd's configuration parsing (flags, file, validation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "rk_log.h"
#include "srv_config.h"

#define ARGV(...)                                                              \
    char *argv[] = {"ringkvd", __VA_ARGS__};                                   \
    int argc = (int)(sizeof(argv) / sizeof(argv[0]))

static int parse(struct srv_config *c, int argc, char **argv)
{
    srv_config_defaults(c);
    return srv_config_parse_args(c, argc, argv);
}

static void test_defaults(void **state)
{
    struct srv_config c;
    srv_config_defaults(&c);
    assert_int_equal(c.shards, 8);
    assert_int_equal(c.max_key_bytes, 4096);
    assert_int_equal(c.max_value_bytes, 1 << 20);
    assert_int_equal(c.max_frame_bytes, 4 << 20);
    assert_int_equal(c.listen.port, 7001);
    assert_int_equal(c.peer_listen.port, 7101);
    assert_int_equal(c.metrics_listen.port, 0);
    assert_int_equal(c.log_level, RK_LOG_INFO);
    assert_false(c.unsafe_no_sync);
    assert_int_equal(c.split_threshold_bytes, 0); /* automatic splits off */
    /* Defaults alone lack an id. */
    assert_int_equal(srv_config_validate(&c), RK_EINVAL);
    assert_non_null(strstr(c.errmsg, "--id"));
}

static void test_flags_both_forms(void **state)
{
    struct srv_config c;
    ARGV("--id", "2", "--listen=127.0.0.1:7002", "--peer-listen",
         "127.0.0.1:7102", "--shards=16", "--unsafe-no-sync",
         "--max-value-bytes", "2MiB", "--max-frame-bytes=8M",
         "--log-level", "debug", "--metrics-listen", ":7202",
         "--split-threshold-bytes=96MiB", "--initial-cluster",
         "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103");
    assert_int_equal(parse(&c, argc, argv), 0);
    assert_int_equal(c.split_threshold_bytes, 96ull << 20);
    assert_int_equal(srv_config_validate(&c), 0);
    assert_int_equal(c.id, 2);
    assert_string_equal(c.listen.host, "127.0.0.1");
    assert_int_equal(c.listen.port, 7002);
    assert_int_equal(c.shards, 16);
    assert_true(c.unsafe_no_sync);
    assert_int_equal(c.max_value_bytes, 2 << 20);
    assert_int_equal(c.max_frame_bytes, 8 << 20);
    assert_int_equal(c.log_level, RK_LOG_DEBUG);
    assert_string_equal(c.metrics_listen.host, "0.0.0.0");
    assert_int_equal(c.metrics_listen.port, 7202);
    assert_int_equal(c.n_members, 3);
    const struct srv_member *m = srv_config_member(&c, 3);
    assert_non_null(m);
    assert_int_equal(m->peer.port, 7103);
    assert_int_equal(m->client.port, 0);
    assert_null(srv_config_member(&c, 4));
}

static void test_cluster_clients(void **state)
{
    struct srv_config c;
    ARGV("--id", "1", "--initial-cluster", "1=127.0.0.1:7101, 2=h2:7102",
         "--initial-cluster-clients", "2=h2:7002,1=127.0.0.1:7001");
    assert_int_equal(parse(&c, argc, argv), 0);
    assert_int_equal(srv_config_validate(&c), 0);
    const struct srv_member *m = srv_config_member(&c, 2);
    assert_non_null(m);
    assert_string_equal(m->peer.host, "h2");
    assert_int_equal(m->client.port, 7002);
}

static void test_bad_flags(void **state)
{
    struct srv_config c;
    {
        ARGV("--id", "x");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
        assert_non_null(strstr(c.errmsg, "--id"));
    }
    {
        ARGV("--split-threshold-bytes", "-1");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
        assert_non_null(strstr(c.errmsg, "--split-threshold-bytes"));
    }
    {
        ARGV("--nope", "1");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
        assert_non_null(strstr(c.errmsg, "unknown flag"));
    }
    {
        ARGV("--id");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
        assert_non_null(strstr(c.errmsg, "needs a value"));
    }
    {
        ARGV("stray");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
    }
    {
        ARGV("--listen", "127.0.0.1:70000");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
    }
    {
        ARGV("--listen", "127.0.0.1");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
    }
    {
        ARGV("--max-key-bytes", "4X");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
    }
    {
        ARGV("--initial-cluster", "1=a:1,1=b:2");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
        assert_non_null(strstr(c.errmsg, "twice"));
    }
    {
        ARGV("--initial-cluster", "0=a:1");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
    }
    {
        ARGV("--initial-cluster", "1:a:1");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
    }
    {
        ARGV("--log-level", "loud");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
    }
    {
        ARGV("--unsafe-no-sync=maybe");
        assert_int_equal(parse(&c, argc, argv), RK_EINVAL);
    }
}

static void test_validate(void **state)
{
    struct srv_config c;
    {
        /* This node is not in the initial cluster. */
        ARGV("--id", "4", "--initial-cluster", "1=a:7101,2=b:7102");
        assert_int_equal(parse(&c, argc, argv), 0);
        assert_int_equal(srv_config_validate(&c), RK_EINVAL);
        assert_non_null(strstr(c.errmsg, "does not list"));
    }
    {
        /* Peer port disagrees with the node's own entry. */
        ARGV("--id", "1", "--initial-cluster", "1=a:7109,2=b:7102");
        assert_int_equal(parse(&c, argc, argv), 0);
        assert_int_equal(srv_config_validate(&c), RK_EINVAL);
    }
    {
        ARGV("--id", "1", "--election-ms", "200", "--heartbeat-ms", "100");
        assert_int_equal(parse(&c, argc, argv), 0);
        assert_int_equal(srv_config_validate(&c), RK_EINVAL);
        assert_non_null(strstr(c.errmsg, "election"));
    }
    {
        ARGV("--id", "1", "--tick-ms", "200");
        assert_int_equal(parse(&c, argc, argv), 0);
        assert_int_equal(srv_config_validate(&c), RK_EINVAL);
    }
    {
        ARGV("--id", "1", "--shards", "0");
        assert_int_equal(parse(&c, argc, argv), 0);
        assert_int_equal(srv_config_validate(&c), RK_EINVAL);
    }
    {
        ARGV("--id", "1", "--max-frame-bytes", "1MiB");
        assert_int_equal(parse(&c, argc, argv), 0);
        assert_int_equal(srv_config_validate(&c), RK_EINVAL);
    }
    {
        ARGV("--id", "1", "--join", "127.0.0.1:7001", "--initial-cluster",
             "1=a:7101");
        assert_int_equal(parse(&c, argc, argv), 0);
        assert_int_equal(srv_config_validate(&c), RK_EINVAL);
    }
    {
        /* A single-node cluster may use any peer port. */
        ARGV("--id", "1", "--initial-cluster", "1=127.0.0.1:9999");
        assert_int_equal(parse(&c, argc, argv), 0);
        assert_int_equal(srv_config_validate(&c), 0);
    }
}

static void test_addr_parse(void **state)
{
    struct srv_addr a;
    assert_int_equal(srv_addr_parse("[::1]:7001", &a), 0);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 7001);
    char buf[300];
    srv_addr_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, "[::1]:7001");
    assert_int_equal(srv_addr_parse("::1:7001", &a), RK_EINVAL);
    assert_int_equal(srv_addr_parse("[::1]7001", &a), RK_EINVAL);
    assert_int_equal(srv_addr_parse("[zz]:7001", &a), RK_EINVAL);
    assert_int_equal(srv_addr_parse("host name:1", &a), RK_EINVAL);
    assert_int_equal(srv_addr_parse("h:0", &a), RK_EINVAL);
    assert_int_equal(srv_addr_parse("h:-1", &a), RK_EINVAL);
    assert_int_equal(srv_addr_parse("node-1.example:65535", &a), 0);
    assert_int_equal(a.port, 65535);
}

static void test_sizes(void **state)
{
    uint64_t v;
    assert_int_equal(srv_parse_size("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(srv_parse_size("4KiB", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(srv_parse_size("1G", &v), 0);
    assert_int_equal(v, 1ull << 30);
    assert_int_equal(srv_parse_size("", &v), RK_EINVAL);
    assert_int_equal(srv_parse_size("-1", &v), RK_EINVAL);
    assert_int_equal(srv_parse_size("1T", &v), RK_EINVAL);
    assert_int_equal(srv_parse_size("99999999999999999999", &v), RK_EINVAL);
    assert_int_equal(srv_parse_size("18446744073709551615G", &v), RK_EINVAL);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_config_file_and_override(void **state)
{
    char path[] = "/tmp/rk_test_srv_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path,
               "# a comment\n"
               "id = 3\n"
               "  listen = 127.0.0.1:7003   # trailing comment\n"
               "peer-listen=127.0.0.1:7103\n"
               "\n"
               "data-dir = \"/var/lib/ringkv\"\n"
               "initial-cluster = 1=127.0.0.1:7101,2=127.0.0.1:7102,"
               "3=127.0.0.1:7103\n"
               "shards = 4\n"
               "unsafe-no-sync = true\n");
    struct srv_config c;
    /* The flag before --config still overrides the file. */
    ARGV("--shards", "12", "--config", path);
    assert_int_equal(parse(&c, argc, argv), 0);
    assert_int_equal(srv_config_validate(&c), 0);
    assert_int_equal(c.id, 3);
    assert_int_equal(c.shards, 12);
    assert_string_equal(c.data_dir, "/var/lib/ringkv");
    assert_true(c.unsafe_no_sync);
    assert_int_equal(c.n_members, 3);

    /* A flag's cluster list replaces the file's instead of merging. */
    {
        char *argv2[] = {"ringkvd", "--config", path, "--initial-cluster",
                         "3=127.0.0.1:7103"};
        assert_int_equal(parse(&c, 5, argv2), 0);
        assert_int_equal(srv_config_validate(&c), 0);
        uint32_t with_peer = 0;
        for (uint32_t i = 0; i < c.n_members; i++)
            with_peer += c.members[i].peer.port != 0;
        assert_int_equal(with_peer, 1);
    }

    write_file(path, "id = 1\nbogus = 2\n");
    {
        char *argv3[] = {"ringkvd", "--config", path};
        assert_int_equal(parse(&c, 3, argv3), RK_EINVAL);
        assert_non_null(strstr(c.errmsg, ":2: unknown setting 'bogus'"));
    }
    write_file(path, "id 1\n");
    {
        char *argv3[] = {"ringkvd", "--config", path};
        assert_int_equal(parse(&c, 3, argv3), RK_EINVAL);
        assert_non_null(strstr(c.errmsg, ":1:"));
    }
    write_file(path, "help = true\n");
    {
        char *argv3[] = {"ringkvd", "--config", path};
        assert_int_equal(parse(&c, 3, argv3), RK_EINVAL);
    }
    unlink(path);
    {
        char *argv3[] = {"ringkvd", "--config", path};
        assert_int_equal(parse(&c, 3, argv3), RK_EIO);
    }
}

static void test_help_and_usage(void **state)
{
    struct srv_config c;
    ARGV("--help");
    assert_int_equal(parse(&c, argc, argv), 0);
    assert_true(c.help);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    srv_config_usage(f);
    fclose(f);
    /* Every flag the brief names is documented. */
    const char *names[] = {"--id", "--listen", "--peer-listen", "--data-dir",
                           "--initial-cluster", "--shards", "--join",
                           "--election-ms", "--heartbeat-ms", "--tick-ms",
                           "--max-key-bytes", "--max-value-bytes",
                           "--max-frame-bytes", "--metrics-listen",
                           "--log-level", "--unsafe-no-sync", "--config"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        assert_non_null(strstr(buf, names[i]));
    free(buf);
}

static void test_cluster_id(void **state)
{
    struct srv_config a, b;
    {
        ARGV("--id", "1", "--initial-cluster", "1=h:1,2=h:2,3=h:3");
        assert_int_equal(parse(&a, argc, argv), 0);
    }
    {
        ARGV("--id", "2", "--initial-cluster", "3=h:3,1=h:1,2=h:2");
        assert_int_equal(parse(&b, argc, argv), 0);
    }
    assert_int_equal(srv_config_cluster_id(&a), srv_config_cluster_id(&b));
    assert_int_not_equal(srv_config_cluster_id(&a), 0);
    {
        ARGV("--id", "2", "--initial-cluster", "3=h:3,1=h:1,2=h:2",
             "--initial-cluster-token", "other");
        assert_int_equal(parse(&b, argc, argv), 0);
    }
    assert_int_not_equal(srv_config_cluster_id(&a),
                         srv_config_cluster_id(&b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_flags_both_forms),
        cmocka_unit_test(test_cluster_clients),
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_addr_parse),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_config_file_and_override),
        cmocka_unit_test(test_help_and_usage),
        cmocka_unit_test(test_cluster_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
