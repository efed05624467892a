/* fax_ocr.c - OCR of a fax's first page, off the loop thread: a bounded pool of worker
 * threads, each with its own tesseract instance (libtesseract's C API), fed from a bounded
 * in-memory queue. Each worker runs tesseract single-threaded (OpenMP limited to one thread:
 * several pages in parallel use the cores better than one page on all of them, and a busy
 * OCR never starves the loop). Results go back to the loop through a pipe; only the loop
 * talks to Redis. A fax is acknowledged and queued before its OCR: a daemon that stops with
 * faxes still waiting for OCR loses only the enrichment (logged), never the fax. The same
 * workers render page images and make the PDF of each TIFF fax (fax_pdf.c). */
#include "fax.h"

#include <cairo.h>
#include <dlfcn.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <leptonica/allheaders.h>
#include <poppler.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <tesseract/capi.h>
#include <time.h>
#include <unistd.h>

#include "omnicc/attachments.h"
#include "omnicc/log.h"
#include "omnicc/util.h"

#define OCR_MAX_FILE (64LL << 20)

enum job_kind { JOB_OCR, JOB_PAGE, JOB_PDF };

struct job {
    struct job *next;
    enum job_kind kind;
    char *ix_id, *path;
    char *text, *err;
    double cpu_s;
    /* JOB_PAGE */
    char *sha, *state_dir;
    int page;
    unsigned char *png;
    size_t png_len;
    fax_page_done_fn *cb;
    void *arg;
    /* JOB_PDF */
    int max_pages;
    bool want_bytes;
    int rc;
    struct fax_pdf pdf;
    fax_pdf_done_fn *pdf_cb;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail, *done_head, *done_tail;
    int queued, queue_max, n_threads;
    pthread_t *threads;
    bool stop, running;
    int pipe_fd[2];
    struct event *ev;
    fax_ocr_done_fn *done;
    char *langs;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .pipe_fd = {-1, -1}};

static void job_free(struct job *j)
{
    free(j->ix_id);
    free(j->path);
    free(j->text);
    free(j->err);
    free(j->sha);
    free(j->state_dir);
    free(j->png);
    free(j->pdf.data);
    free(j);
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* PDF pages are rendered at this resolution (a fine fax is 204x196 dpi) */
#define PDF_DPI 200
#define PDF_MAX_SIDE 12000 /* pixels: 1.5 m at 200 dpi; a bigger page is refused */

static bool is_pdf(const unsigned char *d, size_t n)
{
    return n >= 5 && memcmp(d, "%PDF-", 5) == 0;
}

static bool is_tiff(const unsigned char *d, size_t n)
{
    return n >= 4 && ((d[0] == 'I' && d[1] == 'I') || (d[0] == 'M' && d[1] == 'M'));
}

/* Page n (0-based) of a PDF rendered by poppler (cairo image surface, white background) as
 * an 8-bit grey PIX at PDF_DPI. NULL with *err. */
static PIX *read_pdf_page(const unsigned char *data, size_t len, int n, l_int32 *res, char **err)
{
    GBytes *bytes = g_bytes_new_static(data, len);
    GError *ge = NULL;
    PopplerDocument *doc = poppler_document_new_from_bytes(bytes, NULL, &ge);
    g_bytes_unref(bytes);
    if (!doc) {
        *err = xasprintf("the PDF cannot be read: %s", ge && ge->message ? ge->message : "?");
        if (ge)
            g_error_free(ge);
        return NULL;
    }
    PopplerPage *page = n >= 0 && n < poppler_document_get_n_pages(doc)
                            ? poppler_document_get_page(doc, n)
                            : NULL;
    if (!page) {
        g_object_unref(doc);
        *err = xstrdup("no such page, or it cannot be read as an image");
        return NULL;
    }
    double wpt = 0, hpt = 0;
    poppler_page_get_size(page, &wpt, &hpt);
    double w = wpt * PDF_DPI / 72.0 + 0.5, h = hpt * PDF_DPI / 72.0 + 0.5;
    if (!(w >= 1 && h >= 1 && w <= PDF_MAX_SIDE && h <= PDF_MAX_SIDE)) {
        g_object_unref(page);
        g_object_unref(doc);
        *err = xstrdup("PDF page size out of bounds");
        return NULL;
    }
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)w, (int)h);
    cairo_t *cr = cairo_create(s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_scale(cr, PDF_DPI / 72.0, PDF_DPI / 72.0);
    poppler_page_render_for_printing(page, cr);
    cairo_destroy(cr);
    g_object_unref(page);
    g_object_unref(doc);
    cairo_surface_flush(s);
    PIX *pix = NULL;
    if (cairo_surface_status(s) == CAIRO_STATUS_SUCCESS) {
        /* cairo's RGB24 pixel is 0x00RRGGBB, leptonica's 32-bit one 0xRRGGBB00 */
        int pw = cairo_image_surface_get_width(s), ph = cairo_image_surface_get_height(s);
        int stride = cairo_image_surface_get_stride(s);
        const unsigned char *src = cairo_image_surface_get_data(s);
        PIX *rgb = pixCreate(pw, ph, 32);
        if (rgb && src) {
            l_uint32 *dst = pixGetData(rgb);
            l_int32 wpl = pixGetWpl(rgb);
            for (int y = 0; y < ph; y++) {
                const uint32_t *row = (const uint32_t *)(const void *)(src + (size_t)y * stride);
                for (int x = 0; x < pw; x++)
                    dst[(size_t)y * wpl + x] = (l_uint32)(row[x] << 8);
            }
            pix = pixConvertRGBToLuminance(rgb);
        }
        pixDestroy(&rgb);
    }
    cairo_surface_destroy(s);
    if (!pix) {
        *err = xstrdup("cannot render the PDF page");
        return NULL;
    }
    pixSetResolution(pix, PDF_DPI, PDF_DPI);
    *res = PDF_DPI;
    return pix;
}

/* Page n (0-based) of a TIFF, with standard-resolution pixels (204x98 dpi: twice as tall
 * as wide) stretched back to the page's real aspect ratio. NULL with *err. */
static PIX *read_page(const unsigned char *data, size_t len, int n, l_int32 *res, char **err)
{
    if (is_pdf(data, len))
        return read_pdf_page(data, len, n, res, err);
    PIX *pix = pixReadMemTiff(data, len, n);
    if (!pix) {
        *err = xstrdup("no such page, or it cannot be read as an image");
        return NULL;
    }
    l_int32 xr = pixGetXRes(pix), yr = pixGetYRes(pix);
    if (xr <= 0)
        xr = 204;
    if (yr <= 0)
        yr = xr;
    if (xr > yr * 1.02 || yr > xr * 1.02) {
        /* standard resolution (204x98 dpi): pixels twice as tall as wide (fine, 204x196:
         * 4% taller); stretch them back to the page's real aspect ratio */
        PIX *s = pixScale(pix, 1.0f, (l_float32)xr / (l_float32)yr);
        pixDestroy(&pix);
        if (!s) {
            *err = xstrdup("cannot scale the page");
            return NULL;
        }
        pix = s;
        yr = xr;
    }
    pixSetResolution(pix, xr, yr);
    *res = xr;
    return pix;
}

unsigned char *fax_render_page(const unsigned char *data, size_t len, int page, size_t *out_len,
                               char **err)
{
    l_int32 xr = 0;
    PIX *pix = read_page(data, len, page, &xr, err);
    if (!pix)
        return NULL;
    l_uint8 *png = NULL;
    size_t n = 0;
    int rc = pixWriteMemPng(&png, &n, pix, 0.0f);
    pixDestroy(&pix);
    if (rc != 0 || !png) {
        *err = xstrdup("cannot encode the page as PNG");
        return NULL;
    }
    unsigned char *out = xmalloc(n);
    memcpy(out, png, n);
    lept_free(png);
    *out_len = n;
    return out;
}

char *fax_ocr_tiff_page(void *api, const unsigned char *data, size_t len, char **err)
{
    l_int32 xr = 0;
    PIX *pix = read_page(data, len, 0, &xr, err);
    if (!pix)
        return NULL;
    TessBaseAPISetImage2(api, pix);
    TessBaseAPISetSourceResolution(api, xr);
    char *t = TessBaseAPIGetUTF8Text(api);
    char *out = t ? xstrdup(t) : NULL;
    if (t)
        TessDeleteText(t);
    TessBaseAPIClear(api);
    pixDestroy(&pix);
    if (!out)
        *err = xstrdup("tesseract returned no text");
    return out;
}

static unsigned char *read_file(const char *path, size_t *len, char **err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = xasprintf("cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            if ((long long)cap >= OCR_MAX_FILE) {
                *err = xstrdup("document too large for OCR");
                free(buf);
                close(fd);
                return NULL;
            }
            buf = xrealloc(buf, cap *= 2);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *err = xasprintf("cannot read %s: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *len = n;
    return buf;
}

static void run_page(struct job *j)
{
    size_t len = 0;
    char *ct = NULL;
    unsigned char *data = attachment_get(j->state_dir, j->sha, (size_t)OCR_MAX_FILE, &len, &ct, NULL);
    free(ct);
    if (!data) {
        j->err = xstrdup("no such document");
        return;
    }
    if (!is_tiff(data, len) && !is_pdf(data, len))
        j->err = xstrdup("page images are made of TIFF and PDF documents only");
    else
        j->png = fax_render_page(data, len, j->page - 1, &j->png_len, &j->err);
    free(data);
}

static void run_job(TessBaseAPI *api, const char *init_err, struct job *j)
{
    double t0 = thread_cpu_s();
    if (init_err) {
        j->err = xstrdup(init_err);
        return;
    }
    size_t len = 0;
    unsigned char *data = read_file(j->path, &len, &j->err);
    if (!data)
        return;
    if (!is_tiff(data, len) && !is_pdf(data, len))
        j->err = xstrdup("OCR reads TIFF and PDF documents only");
    else
        j->text = fax_ocr_tiff_page(api, data, len, &j->err);
    free(data);
    j->cpu_s = thread_cpu_s() - t0;
}

static void *worker(void *arg)
{
    /* OpenMP (libgomp, linked by libtesseract) to one thread for this thread's regions;
     * OMP_THREAD_LIMIT=1 in the environment does the same for the whole process */
    void (*set_threads)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (set_threads)
        set_threads(1);
    TessBaseAPI *api = NULL; /* made on the first OCR job: page images need none */
    const char *init_err = NULL;
    for (;;) {
        pthread_mutex_lock(&pool.mu);
        while (!pool.stop && !pool.head)
            pthread_cond_wait(&pool.cv, &pool.mu);
        if (pool.stop) {
            pthread_mutex_unlock(&pool.mu);
            break;
        }
        struct job *j = pool.head;
        pool.head = j->next;
        if (!pool.head)
            pool.tail = NULL;
        pthread_mutex_unlock(&pool.mu);
        j->next = NULL;
        if (j->kind == JOB_PAGE) {
            run_page(j);
        } else if (j->kind == JOB_PDF) {
            j->rc = fax_pdf_of(j->state_dir, j->sha, j->max_pages, j->want_bytes, &j->pdf);
        } else {
            if (!api) {
                api = TessBaseAPICreate();
                if (TessBaseAPIInit3(api, NULL, pool.langs) != 0)
                    init_err = "tesseract cannot load its language data (tesseract-ocr-spa, "
                               "-eng installed?)";
            }
            run_job(api, init_err, j);
        }
        pthread_mutex_lock(&pool.mu);
        if (pool.done_tail)
            pool.done_tail->next = j;
        else
            pool.done_head = j;
        pool.done_tail = j;
        pthread_mutex_unlock(&pool.mu);
        char b = 1;
        while (write(pool.pipe_fd[1], &b, 1) < 0 && errno == EINTR) {
        }
    }
    if (api) {
        TessBaseAPIEnd(api);
        TessBaseAPIDelete(api);
    }
    return NULL;
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    pthread_mutex_lock(&pool.mu);
    struct job *list = pool.done_head;
    pool.done_head = pool.done_tail = NULL;
    pthread_mutex_unlock(&pool.mu);
    while (list) {
        struct job *j = list;
        list = j->next;
        pthread_mutex_lock(&pool.mu);
        pool.queued--;
        pthread_mutex_unlock(&pool.mu);
        if (j->kind == JOB_PAGE)
            j->cb(j->arg, j->png, j->png_len, j->err);
        else if (j->kind == JOB_PDF)
            j->pdf_cb(j->arg, j->ix_id, j->rc, &j->pdf);
        else
            pool.done(j->ix_id, j->text, j->err, j->cpu_s);
        job_free(j);
    }
}

int fax_ocr_start(struct event_base *base, int workers, int queue_max, const char *langs,
                  fax_ocr_done_fn *done, char **err)
{
    setMsgSeverity(L_SEVERITY_NONE); /* leptonica: no stderr chatter about bad images */
    if (pipe2(pool.pipe_fd, O_CLOEXEC | O_NONBLOCK) < 0) {
        *err = xasprintf("fax: OCR pipe: %s", strerror(errno));
        return -1;
    }
    pool.ev = event_new(base, pool.pipe_fd[0], EV_READ | EV_PERSIST, on_done, NULL);
    event_add(pool.ev, NULL);
    pool.done = done;
    pool.langs = xstrdup(langs);
    pool.queue_max = queue_max;
    pool.stop = false;
    pool.threads = xcalloc((size_t)workers, sizeof(pthread_t));
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&pool.threads[i], NULL, worker, NULL) != 0) {
            *err = xstrdup("fax: cannot start the OCR threads");
            pool.n_threads = i;
            fax_ocr_stop();
            return -1;
        }
        pool.n_threads = i + 1;
    }
    pool.running = true;
    return 0;
}

/* Hands j to the workers: ahead of the queue (someone is looking at the screen) or behind
 * it. Refused (j freed, false) when the pool is not running or already holds queue_max +
 * extra jobs (extra: room kept for what a person waits for). */
static bool pool_push(struct job *j, int extra, bool ahead)
{
    pthread_mutex_lock(&pool.mu);
    if (!pool.running || pool.queued >= pool.queue_max + extra) {
        pthread_mutex_unlock(&pool.mu);
        job_free(j);
        return false;
    }
    if (ahead) {
        j->next = pool.head;
        pool.head = j;
        if (!pool.tail)
            pool.tail = j;
    } else {
        if (pool.tail)
            pool.tail->next = j;
        else
            pool.head = j;
        pool.tail = j;
    }
    pool.queued++;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    return true;
}

bool fax_ocr_submit(const char *ix_id, const char *path)
{
    if (!pool.running)
        return false;
    struct job *j = xcalloc(1, sizeof(*j));
    j->ix_id = xstrdup(ix_id);
    j->path = xstrdup(path);
    return pool_push(j, 0, false);
}

bool fax_page_submit(const char *state_dir, const char *sha, int page, fax_page_done_fn *cb,
                     void *arg)
{
    if (!pool.running)
        return false;
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = JOB_PAGE;
    j->state_dir = xstrdup(state_dir);
    j->sha = xstrdup(sha);
    j->page = page;
    j->cb = cb;
    j->arg = arg;
    /* someone is looking at the screen: ahead of the OCR backlog */
    return pool_push(j, 64, true);
}

bool fax_pdf_submit(const char *state_dir, const char *sha, int max_pages, const char *ix_id,
                    bool want_bytes, fax_pdf_done_fn *cb, void *arg)
{
    if (!pool.running)
        return false;
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = JOB_PDF;
    j->state_dir = xstrdup(state_dir);
    j->sha = xstrdup(sha);
    j->max_pages = max_pages;
    j->want_bytes = want_bytes;
    j->ix_id = ix_id ? xstrdup(ix_id) : NULL;
    j->pdf_cb = cb;
    j->arg = arg;
    /* someone waiting for it (want_bytes) may use the room kept for page images, and goes
     * ahead of the backlog as page images do */
    return pool_push(j, want_bytes ? 64 : 0, want_bytes);
}

void fax_ocr_stop(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.stop = true;
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < pool.n_threads; i++)
        pthread_join(pool.threads[i], NULL);
    int lost = 0;
    for (struct job *j = pool.head, *n; j; j = n) {
        n = j->next;
        lost++;
        job_free(j);
    }
    for (struct job *j = pool.done_head, *n; j; j = n) {
        n = j->next;
        lost++;
        job_free(j);
    }
    if (lost)
        log_warn("fax: %d faxes stopped before their OCR (they stay queued without it)", lost);
    if (pool.ev)
        event_free(pool.ev);
    for (int i = 0; i < 2; i++)
        if (pool.pipe_fd[i] >= 0)
            close(pool.pipe_fd[i]);
    free(pool.threads);
    free(pool.langs);
    pool.ev = NULL;
    pool.pipe_fd[0] = pool.pipe_fd[1] = -1;
    pool.threads = NULL;
    pool.langs = NULL;
    pool.head = pool.tail = pool.done_head = pool.done_tail = NULL;
    pool.n_threads = pool.queued = 0;
    pool.running = false;
}
