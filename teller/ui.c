/* ui.c - the teller's screen: 80x24 with ncurses, driven from the keyboard.
 *
 *   row 0      who and where: branch, terminal, counter, ONLINE/OFFLINE, the teller
 *   row 1      the link and the spool: pending work, failed work
 *   rows 3-5   the visit at this counter
 *   rows 7-17  the customer: identifiers, cases, history across channels
 *   rows 19-20 offers pushed by the router
 *   row 21-22  the branch's last event; the message line
 *   row 23     the function keys (F1 or ? for help)
 *
 * Forms open over the middle: Enter or Tab moves to the next field (Enter on the last one
 * submits), Up goes back, Left/Right change a choice, Esc cancels. */
#include <ctype.h>
#include <curses.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wchar.h>

#include "teller.h"

enum mode { M_MAIN, M_FORM, M_HELP, M_OFFERS, M_SPOOL };
enum form_kind { F_SIGNIN, F_LOOKUP, F_VISIT, F_NOTE, F_END, F_CONSENT, F_FNOL, F_HANDOVER };
enum field_kind { T_TEXT, T_SECRET, T_CHOICE };

#define MAX_FIELDS 8
#define MAX_CHOICES 16

struct field {
    const char *label;
    enum field_kind kind;
    char value[512];
    size_t max;
    const char *choices[MAX_CHOICES];
    int n_choices, choice;
};

struct form {
    enum form_kind kind;
    const char *title;
    struct field f[MAX_FIELDS];
    int n, cur;
    char services[MAX_CHOICES][40];
};

static struct {
    enum mode mode;
    struct form form;
    int sel;
} ui;

static const char *const by_choices[] = {"policy", "phone", "national_id", "branch_customer_id",
                                         "email",  NULL};
static const char *const purpose_choices[] = {"service",   "claim",        "sale", "complaint",
                                              "documents", "verification", NULL};
static const char *const outcome_choices[] = {
    "resolved",           "claim_opened", "policy_sold", "quote_given",
    "documents_received", "referred",     "no_action",   NULL};
static const char *const consent_choices[] = {"data_processing", "marketing", "recording",
                                              "e_communication", NULL};
static const char *const yes_no[] = {"yes", "no", NULL};
static const char *const loss_choices[] = {"water",   "fire",   "theft", "hail", "storm",
                                           "vehicle", "injury", "other", NULL};
static const char *const channel_choices[] = {"voice", "email", NULL};

void ui_init(void)
{
    setlocale(LC_ALL, "");
    initscr();
    cbreak();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(25);
    curs_set(0);
    if (has_colors()) {
        start_color();
        use_default_colors();
        init_pair(1, COLOR_WHITE, COLOR_BLUE); /* title */
        init_pair(2, COLOR_BLACK, COLOR_CYAN); /* key labels */
        init_pair(3, COLOR_RED, -1);           /* errors, OFFLINE */
        init_pair(4, COLOR_GREEN, -1);         /* ONLINE */
        init_pair(5, COLOR_YELLOW, -1);        /* pending */
    }
}

void ui_end(void)
{
    endwin();
}

/* ---- drawing helpers ---- */

/* Print at most width columns of UTF-8 (one column per character is close enough here). */
static void put(int y, int x, int width, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    int cols = 0;
    size_t i = 0;
    while (buf[i] && cols < width) {
        unsigned char c = (unsigned char)buf[i];
        size_t len = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        for (size_t k = 1; k < len; k++)
            if (!buf[i + k])
                len = k;
        i += len;
        cols++;
    }
    buf[i] = '\0';
    mvaddstr(y, x, buf);
}

static void hline_title(int y, const char *title)
{
    mvhline(y, 0, ACS_HLINE, COLS);
    if (title)
        put(y, 2, COLS - 4, " %s ", title);
}

static const char *hhmm(int64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, n, "%H:%M", &tm);
    return buf;
}

static const char *hist_time(json_t *at, char *buf, size_t n)
{
    int64_t ms = json_is_integer(at)  ? json_integer_value(at)
                 : json_is_string(at) ? strtoll(json_string_value(at), NULL, 10)
                                      : 0;
    if (!ms)
        return "     ";
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, n, "%d/%m %H:%M", &tm);
    return buf;
}

static void draw_keys(void)
{
    static const char *const keys[][2] = {{"1", "Help"},    {"2", "Find"},   {"3", "Visit"},
                                          {"4", "Next"},    {"5", "Note"},   {"6", "End"},
                                          {"7", "Consnt"},  {"8", "FNOL"},   {"9", "Handov"},
                                          {"10", "Offers"}, {"11", "Spool"}, {"12", "Out"}};
    move(LINES - 1, 0);
    clrtoeol();
    int x = 0;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) && x < COLS; i++) {
        mvaddstr(LINES - 1, x, keys[i][0]);
        x += (int)strlen(keys[i][0]);
        attron(COLOR_PAIR(2));
        mvaddstr(LINES - 1, x, keys[i][1]);
        attroff(COLOR_PAIR(2));
        x += (int)strlen(keys[i][1]) + 1;
    }
}

static void draw_header(struct app *a)
{
    attron(COLOR_PAIR(1) | A_BOLD);
    mvhline(0, 0, ' ', COLS);
    put(0, 0, COLS, " omnicc teller | %s (%s/%s) | counter %s",
        a->branch_name[0] ? a->branch_name : "?", a->branch[0] ? a->branch : "?",
        a->terminal[0] ? a->terminal : "?", a->conf.counter);
    attroff(COLOR_PAIR(1) | A_BOLD);
    const char *who =
        a->have_teller ? (a->agent_name[0] ? a->agent_name : a->agent) : "not signed in";
    int online = app_online(a);
    char right[200];
    snprintf(right, sizeof(right), " %s | %s ", online ? "ONLINE" : "OFFLINE", who);
    int x = COLS - (int)strlen(right);
    attron((online ? COLOR_PAIR(4) : COLOR_PAIR(3)) | A_BOLD | A_REVERSE);
    put(0, x > 0 ? x : 0, COLS, "%s", right);
    attroff((online ? COLOR_PAIR(4) : COLOR_PAIR(3)) | A_BOLD | A_REVERSE);

    move(1, 0);
    clrtoeol();
    if (!online)
        put(1, 1, 50, "Link: %s", a->link.why[0] ? a->link.why : "connecting");
    else
        put(1, 1, 50, "Link: up%s", a->have_teller && !a->verified ? " (signing in)" : "");
    if (a->spool.pending || a->spool.failed) {
        attron(COLOR_PAIR(5) | A_BOLD);
        put(1, 52, 28, "Pending: %d  Failed: %d", a->spool.pending, a->spool.failed);
        attroff(COLOR_PAIR(5) | A_BOLD);
    } else {
        put(1, 52, 28, "Pending: 0");
    }
}

static void draw_visit(struct app *a)
{
    hline_title(2, "Visit at this counter");
    for (int y = 3; y <= 5; y++) {
        move(y, 0);
        clrtoeol();
    }
    if (!a->cur.id[0] && !a->cur.ref[0]) {
        put(3, 2, COLS - 4, "No visit. F4 calls the next customer, F3 registers a walk-in.");
        return;
    }
    char t[8];
    put(3, 2, COLS - 4, "Ticket %-5s %-30s service %s", a->cur.ticket[0] ? a->cur.ticket : "-",
        a->cur.customer[0] ? a->cur.customer : "", a->cur.service);
    put(4, 2, COLS - 4, "%s  case %s  %s since %s", a->cur.id[0] ? a->cur.id : "(not sent yet)",
        a->cur.case_id[0] ? a->cur.case_id : "-", a->cur.state, hhmm(a->cur.since, t, sizeof(t)));
}

static void draw_customer(struct app *a)
{
    hline_title(6, "Customer");
    for (int y = 7; y <= 17; y++) {
        move(y, 0);
        clrtoeol();
    }
    json_t *c = a->customer;
    if (!c) {
        put(7, 2, COLS - 4, "F2 looks a customer up (policy, phone, national id, branch id).");
        return;
    }
    json_t *cust = json_object_get(c, "customer");
    char ids[300] = "";
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(cust, "identifiers"), i, v)
    {
        size_t n = strlen(ids);
        snprintf(ids + n, sizeof(ids) - n, "%s%s %s", n ? ", " : "",
                 json_string_value(json_object_get(v, "type")) ?: "",
                 json_string_value(json_object_get(v, "value")) ?: "");
    }
    attron(A_BOLD);
    put(7, 2, COLS - 4, "%s  (%s, %s)",
        json_string_value(json_object_get(cust, "name")) ?: "(no name)",
        json_string_value(json_object_get(cust, "id")) ?: "?",
        json_string_value(json_object_get(cust, "segment")) ?: "standard");
    attroff(A_BOLD);
    put(8, 2, COLS - 4, "%s", ids);
    json_t *cases = json_object_get(c, "cases");
    if (!cases)
        cases = json_object_get(c, "open_cases");
    char line[300] = "Cases:";
    json_array_foreach(cases, i, v)
    {
        size_t n = strlen(line);
        snprintf(line + n, sizeof(line) - n, " %s(%s)",
                 json_string_value(json_object_get(v, "id")) ?: "",
                 json_string_value(json_object_get(v, "status")) ?: "open");
    }
    put(9, 2, COLS - 4, "%s", line);
    put(10, 2, COLS - 4, "History (all channels):");
    int y = 11;
    json_array_foreach(json_object_get(c, "history"), i, v)
    {
        if (y > 17)
            break;
        char t[32];
        const char *sum = json_string_value(json_object_get(v, "summary"));
        if (!sum)
            sum = json_string_value(json_object_get(v, "text"));
        put(y++, 3, COLS - 5, "%s %-8s %-22s %s", hist_time(json_object_get(v, "at"), t, sizeof(t)),
            json_string_value(json_object_get(v, "channel"))
                ?: (json_string_value(json_object_get(v, "branch")) ? "branch" : ""),
            json_string_value(json_object_get(v, "type")) ?: "", sum ? sum : "");
    }
}

static void draw_offers(struct app *a)
{
    hline_title(18, "Offers");
    for (int y = 19; y <= 22; y++) {
        move(y, 0);
        clrtoeol();
    }
    if (a->n_offers == 0)
        put(19, 2, COLS - 4, "None.");
    int64_t now = teller_now_ms();
    for (int i = 0; i < a->n_offers && i < 2; i++) {
        long left = (long)((a->offers[i].expires_at - now) / 1000);
        put(19 + i, 2, COLS - 4, "%s  %s  %s  (%lds left, F10 to answer)", a->offers[i].reservation,
            a->offers[i].interaction, a->offers[i].summary, left > 0 ? left : 0);
    }
    if (a->last_event[0])
        put(21, 2, COLS - 4, "Branch: %s", a->last_event);
    if (a->status[0]) {
        if (a->status_error)
            attron(COLOR_PAIR(3) | A_BOLD);
        put(22, 1, COLS - 2, "%s", a->status);
        if (a->status_error)
            attroff(COLOR_PAIR(3) | A_BOLD);
    }
}

static void draw_box(int top, int height, const char *title)
{
    int left = 4, width = COLS - 8;
    for (int y = top; y < top + height; y++) {
        move(y, left);
        for (int x = 0; x < width; x++)
            addch(' ');
    }
    mvhline(top, left, ACS_HLINE, width);
    mvhline(top + height - 1, left, ACS_HLINE, width);
    mvvline(top, left, ACS_VLINE, height);
    mvvline(top, left + width - 1, ACS_VLINE, height);
    mvaddch(top, left, ACS_ULCORNER);
    mvaddch(top, left + width - 1, ACS_URCORNER);
    mvaddch(top + height - 1, left, ACS_LLCORNER);
    mvaddch(top + height - 1, left + width - 1, ACS_LRCORNER);
    attron(A_BOLD);
    put(top, left + 2, width - 4, " %s ", title);
    attroff(A_BOLD);
}

static void draw_form(void)
{
    struct form *fm = &ui.form;
    int top = 4, height = fm->n * 2 + 4;
    draw_box(top, height, fm->title);
    for (int i = 0; i < fm->n; i++) {
        struct field *f = &fm->f[i];
        int y = top + 2 + i * 2;
        put(y, 6, 22, "%s:", f->label);
        if (i == fm->cur)
            attron(A_REVERSE);
        char shown[520];
        if (f->kind == T_CHOICE)
            snprintf(shown, sizeof(shown), "< %s >", f->choices[f->choice]);
        else if (f->kind == T_SECRET) {
            size_t n = strlen(f->value);
            memset(shown, '*', n < 60 ? n : 60);
            shown[n < 60 ? n : 60] = '\0';
        } else
            snprintf(shown, sizeof(shown), "%s", f->value);
        size_t n = strlen(shown);
        const char *tail = n > 44 ? shown + n - 44 : shown; /* the end of long text stays in view */
        put(y, 28, 46, "%-44s", tail);
        if (i == fm->cur)
            attroff(A_REVERSE);
    }
    put(top + height - 2, 6, COLS - 12,
        "Enter: next/submit  Up: back  Left/Right: choice  Esc: cancel");
}

static void draw_help(void)
{
    static const char *const lines[] = {
        "F1 or ?   this help                    F7   record consent (visit or case)",
        "F2        look a customer up, with     F8   first notice of loss (claim)",
        "          the purpose (it is logged)   F9   hand over to the contact centre",
        "F3        register a walk-in visit     F10  offers: Enter accepts, r rejects",
        "F4        call the next customer       F11  the spool: work not yet delivered",
        "F5        add a note                   F12  sign in / sign out",
        "F6        end the visit with outcome   Ctrl-Q  quit (pending work stays spooled)",
        "",
        "When the link is down the terminal keeps working: walk-ins, notes, outcomes,",
        "consent, FNOL and handovers are saved on this terminal (Pending) and delivered",
        "once when the link returns. Lookups, call next and offers need the link.",
        "",
        "Press any key to go back.",
    };
    draw_box(3, (int)(sizeof(lines) / sizeof(lines[0])) + 3, "Help");
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        put(5 + (int)i, 6, COLS - 12, "%s", lines[i]);
}

static void draw_offer_list(struct app *a)
{
    draw_box(4, 14, "Offers: Enter accepts, r rejects, Esc goes back");
    if (a->n_offers == 0)
        put(6, 6, COLS - 12, "No offer now.");
    int64_t now = teller_now_ms();
    for (int i = 0; i < a->n_offers; i++) {
        if (i == ui.sel)
            attron(A_REVERSE);
        long left = (long)((a->offers[i].expires_at - now) / 1000);
        put(6 + i, 6, COLS - 12, "%-6s %-7s %-40s %3lds", a->offers[i].reservation,
            a->offers[i].interaction, a->offers[i].summary, left > 0 ? left : 0);
        if (i == ui.sel)
            attroff(A_REVERSE);
    }
}

static void draw_spool(struct app *a)
{
    draw_box(3, 18, "Spool: work kept on this terminal (Esc goes back)");
    int y = 5;
    int skip = a->spool.pending + a->spool.failed + a->spool.sent - 14;
    for (struct spool_entry *e = a->spool.head; e && y < 19; e = e->next) {
        if (skip-- > 0)
            continue;
        char t[8];
        const char *st = e->state == SPOOL_PENDING ? "PENDING"
                         : e->state == SPOOL_SENT  ? "sent"
                                                   : "FAILED";
        put(y++, 6, COLS - 12, "%s %-7s %-30s %s", hhmm(e->at, t, sizeof(t)), st, e->summary,
            e->state == SPOOL_FAILED ? e->result : "");
    }
    if (y == 5)
        put(5, 6, COLS - 12, "Nothing kept: everything was delivered.");
}

void ui_draw(struct app *a)
{
    erase();
    draw_header(a);
    draw_visit(a);
    draw_customer(a);
    draw_offers(a);
    draw_keys();
    if (ui.mode == M_FORM)
        draw_form();
    else if (ui.mode == M_HELP)
        draw_help();
    else if (ui.mode == M_OFFERS)
        draw_offer_list(a);
    else if (ui.mode == M_SPOOL)
        draw_spool(a);
    refresh();
}

/* ---- forms ---- */

static struct field *add_field(struct form *fm, const char *label, enum field_kind kind, size_t max)
{
    struct field *f = &fm->f[fm->n++];
    memset(f, 0, sizeof(*f));
    f->label = label;
    f->kind = kind;
    f->max = max < sizeof(f->value) - 1 ? max : sizeof(f->value) - 1;
    return f;
}

static void add_choice(struct form *fm, const char *label, const char *const *choices)
{
    struct field *f = add_field(fm, label, T_CHOICE, 0);
    for (int i = 0; choices[i] && i < MAX_CHOICES; i++)
        f->choices[f->n_choices++] = choices[i];
}

static void open_form(struct app *a, enum form_kind kind)
{
    struct form *fm = &ui.form;
    memset(fm, 0, sizeof(*fm));
    fm->kind = kind;
    switch (kind) {
    case F_SIGNIN:
        fm->title = "Sign in";
        add_field(fm, "Agent id", T_TEXT, 64);
        add_field(fm, "Token", T_SECRET, 256);
        break;
    case F_LOOKUP:
        fm->title = "Look up a customer (logged with its purpose)";
        add_choice(fm, "By", by_choices);
        add_field(fm, "Value", T_TEXT, 200);
        add_choice(fm, "Purpose", purpose_choices);
        break;
    case F_VISIT: {
        fm->title = "Walk-in visit";
        struct field *f = add_field(fm, "Service", T_CHOICE, 0);
        const char *k;
        json_t *v;
        json_object_foreach(a->services, k, v)
        {
            if (f->n_choices >= MAX_CHOICES)
                break;
            snprintf(fm->services[f->n_choices], sizeof(fm->services[0]), "%s", k);
            f->choices[f->n_choices] = fm->services[f->n_choices];
            f->n_choices++;
        }
        if (f->n_choices == 0) {
            static const char *const fallback[] = {"policy_inquiry", "claim_fnol", "new_policy",
                                                   "documents"};
            for (int i = 0; i < 4; i++)
                f->choices[f->n_choices++] = fallback[i];
        }
        add_field(fm, "Name", T_TEXT, 200);
        add_field(fm, "Policy number", T_TEXT, 60);
        add_field(fm, "Phone", T_TEXT, 40);
        add_field(fm, "National id", T_TEXT, 40);
        add_field(fm, "Note", T_TEXT, 400);
        add_choice(fm, "Serve now", yes_no);
        break;
    }
    case F_NOTE:
        fm->title = "Note on the case";
        add_field(fm, "Note", T_TEXT, 500);
        break;
    case F_END:
        fm->title = "End the visit";
        add_choice(fm, "Outcome", outcome_choices);
        add_field(fm, "Note", T_TEXT, 400);
        break;
    case F_CONSENT:
        fm->title = "Consent";
        add_choice(fm, "Kind", consent_choices);
        add_choice(fm, "Granted", yes_no);
        add_field(fm, "Wording / reference", T_TEXT, 300);
        break;
    case F_FNOL: {
        fm->title = "First notice of loss";
        struct field *d = add_field(fm, "Loss date (YYYY-MM-DD)", T_TEXT, 10);
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(d->value, sizeof(d->value), "%Y-%m-%d", &tm);
        add_choice(fm, "Kind of loss", loss_choices);
        add_field(fm, "What happened", T_TEXT, 500);
        add_field(fm, "Where", T_TEXT, 200);
        break;
    }
    case F_HANDOVER: {
        fm->title = "Hand over to the contact centre";
        struct field *q = add_field(fm, "Queue", T_TEXT, 64);
        snprintf(q->value, sizeof(q->value), "%s", a->conf.handover_queue);
        add_choice(fm, "Channel", channel_choices);
        add_field(fm, "What they should do", T_TEXT, 500);
        break;
    }
    }
    ui.mode = M_FORM;
}

static const char *val(int i)
{
    struct field *f = &ui.form.f[i];
    return f->kind == T_CHOICE ? f->choices[f->choice] : f->value;
}

static void submit(struct app *a)
{
    struct form *fm = &ui.form;
    bool ok = false;
    switch (fm->kind) {
    case F_SIGNIN:
        ok = app_signin(a, val(0), val(1));
        memset(fm->f[1].value, 0, sizeof(fm->f[1].value));
        break;
    case F_LOOKUP:
        ok = app_lookup(a, val(0), val(1), val(2));
        break;
    case F_VISIT: {
        json_t *c = json_object();
        static const char *const keys[] = {NULL, "name", "policy", "phone", "national_id"};
        for (int i = 1; i <= 4; i++)
            if (*val(i))
                json_object_set_new(c, keys[i], json_string(val(i)));
        ok = app_visit_create(a, val(0), c, val(5), strcmp(val(6), "yes") == 0);
        break;
    }
    case F_NOTE:
        ok = app_note(a, val(0));
        break;
    case F_END:
        ok = app_visit_end(a, val(0), val(1));
        break;
    case F_CONSENT:
        ok = app_consent(a, val(0), strcmp(val(1), "yes") == 0, val(2));
        break;
    case F_FNOL: {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(val(0), "%Y-%m-%d", &tm);
        if (!end || *end) {
            app_status(a, true, "Loss date: write it as YYYY-MM-DD.");
            break;
        }
        tm.tm_hour = 12;
        tm.tm_isdst = -1;
        ok = app_fnol(a, (int64_t)mktime(&tm) * 1000, val(1), val(2), val(3));
        break;
    }
    case F_HANDOVER:
        ok = app_handover(a, val(0), val(1), val(2));
        break;
    }
    if (ok || fm->kind == F_SIGNIN)
        ui.mode = M_MAIN;
}

static void form_key(struct app *a, wint_t ch, bool is_key)
{
    struct form *fm = &ui.form;
    struct field *f = &fm->f[fm->cur];
    if (!is_key && ch == 27) {
        ui.mode = M_MAIN;
        app_status(a, false, "Cancelled.");
        return;
    }
    bool enter = (!is_key && (ch == '\r' || ch == '\n')) || (is_key && ch == KEY_ENTER);
    if (enter || (!is_key && ch == '\t') || (is_key && ch == KEY_DOWN)) {
        if (fm->cur + 1 < fm->n)
            fm->cur++;
        else if (enter)
            submit(a);
        else
            fm->cur = 0;
        return;
    }
    if (is_key && (ch == KEY_UP || ch == KEY_BTAB)) {
        if (fm->cur > 0)
            fm->cur--;
        return;
    }
    if (f->kind == T_CHOICE) {
        if ((is_key && ch == KEY_RIGHT) || (!is_key && ch == ' '))
            f->choice = (f->choice + 1) % f->n_choices;
        else if (is_key && ch == KEY_LEFT)
            f->choice = (f->choice + f->n_choices - 1) % f->n_choices;
        return;
    }
    if ((is_key && ch == KEY_BACKSPACE) || (!is_key && (ch == 127 || ch == 8))) {
        size_t n = strlen(f->value);
        while (n > 0 && ((unsigned char)f->value[n - 1] & 0xc0) == 0x80)
            n--; /* continuation bytes of the last character */
        if (n > 0)
            n--;
        f->value[n] = '\0';
        return;
    }
    if (!is_key && ch >= 32 && ch != 127) {
        char mb[MB_LEN_MAX + 1];
        mbstate_t st;
        memset(&st, 0, sizeof(st));
        size_t n = wcrtomb(mb, (wchar_t)ch, &st);
        size_t len = strlen(f->value);
        if (n != (size_t)-1 && len + n <= f->max) {
            memcpy(f->value + len, mb, n);
            f->value[len + n] = '\0';
        }
    }
}

/* ---- keys ---- */

static bool fkey(wint_t ch, int n)
{
    return ch == (wint_t)KEY_F(n);
}

static void main_key(struct app *a, wint_t ch, bool is_key)
{
    if (!is_key && ch == 17) { /* Ctrl-Q */
        a->quit = true;
        return;
    }
    if ((!is_key && ch == '?') || (is_key && fkey(ch, 1))) {
        ui.mode = M_HELP;
        return;
    }
    if (!is_key)
        return;
    bool need_teller = !fkey(ch, 12) && !fkey(ch, 11) && !fkey(ch, 1);
    if (need_teller && !a->have_teller) {
        app_status(a, true, "Sign in first (F12).");
        return;
    }
    if (fkey(ch, 2))
        open_form(a, F_LOOKUP);
    else if (fkey(ch, 3))
        open_form(a, F_VISIT);
    else if (fkey(ch, 4))
        app_call_next(a);
    else if (fkey(ch, 5))
        open_form(a, F_NOTE);
    else if (fkey(ch, 6)) {
        if (!a->cur.id[0] && !a->cur.ref[0])
            app_status(a, true, "No visit at this counter.");
        else
            open_form(a, F_END);
    } else if (fkey(ch, 7))
        open_form(a, F_CONSENT);
    else if (fkey(ch, 8))
        open_form(a, F_FNOL);
    else if (fkey(ch, 9))
        open_form(a, F_HANDOVER);
    else if (fkey(ch, 10)) {
        ui.mode = M_OFFERS;
        ui.sel = 0;
    } else if (fkey(ch, 11))
        ui.mode = M_SPOOL;
    else if (fkey(ch, 12)) {
        if (a->have_teller)
            app_signout(a);
        else
            open_form(a, F_SIGNIN);
    }
}

void ui_key(struct app *a)
{
    wint_t ch;
    int rc;
    while ((rc = get_wch(&ch)) != ERR) {
        bool is_key = rc == KEY_CODE_YES;
        if (is_key && ch == KEY_RESIZE)
            continue;
        switch (ui.mode) {
        case M_MAIN:
            main_key(a, ch, is_key);
            break;
        case M_FORM:
            form_key(a, ch, is_key);
            break;
        case M_HELP:
        case M_SPOOL:
            ui.mode = M_MAIN;
            break;
        case M_OFFERS:
            if (is_key && ch == KEY_DOWN && ui.sel + 1 < a->n_offers)
                ui.sel++;
            else if (is_key && ch == KEY_UP && ui.sel > 0)
                ui.sel--;
            else if ((!is_key && (ch == '\r' || ch == '\n' || ch == 'a')) ||
                     (is_key && ch == KEY_ENTER)) {
                app_offer(a, ui.sel, true);
                ui.mode = M_MAIN;
            } else if (!is_key && ch == 'r') {
                app_offer(a, ui.sel, false);
                ui.mode = M_MAIN;
            } else if (!is_key && ch == 27)
                ui.mode = M_MAIN;
            break;
        }
        if (a->quit)
            return;
    }
}

/* The sign-in form opens by itself while no teller is signed in. */
void ui_maybe_signin(struct app *a);
void ui_maybe_signin(struct app *a)
{
    if (!a->have_teller && ui.mode == M_MAIN)
        open_form(a, F_SIGNIN);
}
