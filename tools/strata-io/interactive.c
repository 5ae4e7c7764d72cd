/*
 * strata-io interactive mode: commands read from stdin, one per line.
 *
 * The main loop runs while we wait for input, so aio completions print
 * as soon as they happen.  Input arrives through a handler on fd 0 in the
 * main AioContext that only queues complete lines; commands run from the
 * loop below, outside any handler, with the stdin handler removed, so a
 * command's own waiting never re-enters the input code.
 *
 * On a terminal, GNU readline (callback interface) gives line editing,
 * history and command-name completion.  Otherwise the prompt is printed
 * before each line, as qemu-io does, and lines are read raw: through the
 * loop when stdin can be polled (pipes, FIFOs), with blocking reads when
 * it cannot (regular files, /dev/null).
 */
#include <errno.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "tools/strata-io/sio.h"

#define PROMPT "strata-io> "

typedef struct Input {
    GQueue lines;     /* char *: complete lines not run yet */
    GString *partial; /* raw mode: bytes after the last newline */
    bool eof;
} Input;

/* readline's line callback takes no opaque pointer. */
static Input *rl_input;

static void input_push(Input *in, const char *line, size_t len)
{
    g_queue_push_tail(&in->lines, g_strndup(line, len));
}

/* Reads what is available on fd 0 and queues the complete lines; false at end of input. */
static bool input_read_raw(Input *in)
{
    char buf[4096];
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return true;
    }
    if (n <= 0) {
        in->eof = true;
        if (in->partial->len) {
            /* A last line without a newline still runs, as in qemu-io. */
            input_push(in, in->partial->str, in->partial->len);
            g_string_truncate(in->partial, 0);
        }
        return false;
    }
    g_string_append_len(in->partial, buf, n);
    char *start = in->partial->str, *nl;
    while ((nl = memchr(start, '\n', in->partial->len - (start - in->partial->str)))) {
        input_push(in, start, nl - start);
        start = nl + 1;
    }
    g_string_erase(in->partial, 0, start - in->partial->str);
    return true;
}

static void on_stdin_raw(void *opaque)
{
    input_read_raw(opaque);
}

static void on_readline_line(char *line)
{
    if (!line) {
        rl_input->eof = true; /* readline has already ended the prompt's line */
    } else {
        if (*line) {
            add_history(line);
        }
        g_queue_push_tail(&rl_input->lines, g_strdup(line));
        free(line);
    }
    /* Keeps readline from printing the next prompt before the command's output. */
    rl_callback_handler_remove();
}

static void on_stdin_tty(void *opaque)
{
    rl_callback_read_char();
}

static char **complete_command(const char *text, int start, int end)
{
    /* Command names for the first word; file names (readline's default) after it. */
    return start == 0 ? rl_completion_matches(text, sio_command_generator) : NULL;
}

static bool stdin_is_pollable(void)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    bool ok = ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev) == 0;
    if (ep >= 0) {
        close(ep);
    }
    return ok;
}

/* Waits (running the main loop) until a line is queued or input ends. */
static void wait_for_line(Input *in, bool tty, bool pollable)
{
    AioContext *ctx = aio_main_context();

    if (!pollable) {
        while (aio_poll(ctx, false)) {
            /* run what is ready before blocking on input */
        }
        while (g_queue_is_empty(&in->lines) && input_read_raw(in)) {
        }
        return;
    }
    if (tty) {
        rl_callback_handler_install(PROMPT, on_readline_line);
    }
    aio_set_fd_handler(ctx, STDIN_FILENO, tty ? on_stdin_tty : on_stdin_raw, NULL, NULL, NULL, in);
    while (g_queue_is_empty(&in->lines) && !in->eof) {
        aio_poll(ctx, true);
    }
    aio_set_fd_handler(ctx, STDIN_FILENO, NULL, NULL, NULL, NULL, NULL);
}

int sio_interactive(Sio *s)
{
    Input in = {.partial = g_string_new(NULL)};
    bool tty = isatty(STDIN_FILENO);
    bool pollable = stdin_is_pollable();
    int failed = 0;

    g_queue_init(&in.lines);
    if (tty) {
        rl_input = &in;
        rl_readline_name = "strata-io";
        rl_attempted_completion_function = complete_command;
    }
    while (!s->quit) {
        if (!tty) {
            /* One prompt per line read, even when several arrived at once. */
            printf(PROMPT);
            fflush(stdout);
        }
        if (g_queue_is_empty(&in.lines) && !in.eof) {
            wait_for_line(&in, tty, pollable);
        }
        if (g_queue_is_empty(&in.lines)) {
            break; /* end of input */
        }
        g_autofree char *line = g_queue_pop_head(&in.lines);
        if (sio_run_line(s, line) < 0) {
            failed = -EINVAL;
        }
    }
    g_queue_clear_full(&in.lines, g_free);
    g_string_free(in.partial, true);
    rl_input = NULL;
    return failed;
}
