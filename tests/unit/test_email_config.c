/* The email channel's configuration: [email] and repeated [mailbox NAME] sections, their
 * defaults, and errors that name file, line and key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "omnicc/config.h"
#include "omnicc/identity.h"

static char path[64], pwfile[64];

static struct config *load_text(const char *text, char **err)
{
    snprintf(path, sizeof(path), "/tmp/omnicc-ecfg-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    struct config *cfg = config_load(path, err);
    unlink(path);
    return cfg;
}

static void expect_error(const char *text, int line, const char *key, const char *what)
{
    char *err = NULL;
    struct config *cfg = load_text(text, &err);
    assert_null(cfg);
    assert_non_null(err);
    char want[256];
    snprintf(want, sizeof(want), "%s:%d: %s: ", path, line, key);
    if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, what))
        fail_msg("got \"%s\", want prefix \"%s\" and \"%s\"", err, want, what);
    free(err);
}

#define TOKEN "[api]\ntoken = 0123456789abcdef0123\n"

static int setup(void **state)
{
    snprintf(pwfile, sizeof(pwfile), "/tmp/omnicc-pw-XXXXXX");
    int fd = mkstemp(pwfile);
    if (fd < 0 || write(fd, "secret\n", 7) != 7)
        return -1;
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    unlink(pwfile);
    identity_shutdown();
    return 0;
}

static void test_mailboxes_and_defaults(void **state)
{
    char text[1024], *err = NULL;
    snprintf(text, sizeof(text),
             TOKEN "[queue claims]\n[mailbox claims]\nurl = imaps://imap.example/INBOX\n"
                   "user = claims@insurer.example\npassword_file = %s\nqueue = claims\n"
                   "[mailbox other]\nurl = imap://imap.example:143/Other\nuser = other\n"
                   "password_file = %s\nprocessed = move\naddress = other@insurer.example\n",
             pwfile, pwfile);
    struct config *cfg = load_text(text, &err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->n_mailboxes, 2);
    const struct mailbox_conf *m = config_mailbox(cfg, "claims");
    assert_non_null(m);
    assert_string_equal(m->password, "secret");
    assert_string_equal(m->address, "claims@insurer.example"); /* from user */
    assert_string_equal(m->processed, "flag");
    assert_string_equal(m->starttls, "required");
    assert_string_equal(m->ack_reply, "no");
    assert_int_equal(m->poll_interval, 30);
    m = config_mailbox(cfg, "other");
    assert_string_equal(m->processed, "move");
    assert_string_equal(m->move_to, "Processed");
    assert_null(cfg->email_smtp_url);
    assert_string_equal(cfg->email_smtp_starttls, "required");
    assert_int_equal(cfg->email_smtp_workers, 2);
    assert_null(config_mailbox(cfg, "nope"));
    config_free(cfg);
}

static void test_errors(void **state)
{
    char text[1024];
    expect_error(TOKEN "[mailbox]\n", 3, "mailbox", "needs a name");
    expect_error(TOKEN "[mailbox a]\nuser = u\n", 3, "url", "required");
    snprintf(text, sizeof(text), TOKEN "[mailbox a]\nurl = pop3://x/INBOX\nuser = u\npassword_file = %s\n",
             pwfile);
    expect_error(text, 3, "url", "imap://");
    snprintf(text, sizeof(text), TOKEN "[mailbox a]\nurl = imap://x/INBOX\nuser = u\npassword_file = %s\n"
                                       "queue = nope\n", pwfile);
    expect_error(text, 3, "queue", "no queue");
    expect_error(TOKEN "[mailbox a]\nurl = imap://x/INBOX\nuser = u\npassword_file = /nonexistent\n",
                 3, "password_file", "cannot open");
    expect_error(TOKEN "[mailbox a]\nprocessed = delete\n", 4, "processed", "flag|move");
    expect_error(TOKEN "[mailbox a]\n[mailbox a]\n", 4, "mailbox", "defined twice");
    expect_error(TOKEN "[email]\nsmtp_url = smtps://relay:465\n", 4, "smtp_url", "STARTTLS");
    expect_error(TOKEN "[email]\nsmtp_user = u\n", 4, "smtp_user", "smtp_password_file");
    expect_error(TOKEN "[email]\nsmtp_workers = 0\n", 4, "smtp_workers", "between");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mailboxes_and_defaults),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
