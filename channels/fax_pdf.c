/* fax_pdf.c - a PDF of every TIFF fax, for the agent desktop (docs/FAX.md, "The fax as a
 * PDF"): libtiff decodes each page, cairo's PDF surface writes it at the page's physical
 * size (pixels over dots per inch, each way: a standard-resolution page, 204x98 dpi, is as
 * tall as a fine one), a bi-level page as a 1-bit image mask (black drawn through it), so
 * that it stays about as small as the fax. The PDF is stored content-addressed beside the
 * TIFF, and a small link file <tiff sha>.pdf names it, so it is made once. A PDF fax is
 * served as received. Everything here blocks (CPU, disk): it runs on the fax workers
 * (fax_ocr.c), never on the loop thread. */
#include "fax.h"

#include <cairo-pdf.h>
#include <cairo.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#include "omnicc/attachments.h"
#include "omnicc/util.h"

#define PDF_MAX_POINTS 14400.0        /* PDF's own page limit: 200 inches */
#define MAX_MASK_PIXELS (400LL << 20) /* 1-bit pages: 50 MB of mask at most */
#define MAX_RGB_PIXELS (40LL << 20)   /* other pages: 160 MB of RGB at most */
#define PDF_MAX_READ (64LL << 20)

struct growbuf {
    unsigned char *d;
    size_t len, cap;
};

static cairo_status_t buf_write(void *arg, const unsigned char *data, unsigned int n)
{
    struct growbuf *b = arg;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        b->d = xrealloc(b->d, cap);
        b->cap = cap;
    }
    memcpy(b->d + b->len, data, n);
    b->len += n;
    return CAIRO_STATUS_SUCCESS;
}

/* cairo's A1 pixels fill each 32-bit word from its least significant bit on little-endian
 * machines, libtiff's from the most significant bit of each byte */
static unsigned char bit_order(unsigned char b)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    b = (unsigned char)((b & 0xF0) >> 4 | (b & 0x0F) << 4);
    b = (unsigned char)((b & 0xCC) >> 2 | (b & 0x33) << 2);
    b = (unsigned char)((b & 0xAA) >> 1 | (b & 0x55) << 1);
#endif
    return b;
}

/* A bi-level page as an A1 surface whose set pixels are the black ones. NULL with *err. */
static cairo_surface_t *read_mask(TIFF *t, uint32_t w, uint32_t h, const char **err)
{
    uint16_t photometric = PHOTOMETRIC_MINISWHITE;
    TIFFGetFieldDefaulted(t, TIFFTAG_PHOTOMETRIC, &photometric);
    if ((long long)w * h > MAX_MASK_PIXELS) {
        *err = "page too large";
        return NULL;
    }
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_A1, (int)w, (int)h);
    if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(img);
        *err = "page too large";
        return NULL;
    }
    unsigned char *dst = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    tmsize_t sl = TIFFScanlineSize(t);
    size_t row_bytes = (w + 7) / 8;
    if (sl < (tmsize_t)row_bytes) {
        cairo_surface_destroy(img);
        *err = "damaged page";
        return NULL;
    }
    unsigned char *line = xmalloc((size_t)sl);
    bool invert = photometric == PHOTOMETRIC_MINISBLACK; /* else 1 is black */
    unsigned char tail = w % 8 ? (unsigned char)(0xFF00 >> (w % 8)) : 0xFF;
    for (uint32_t y = 0; y < h; y++) {
        if (TIFFReadScanline(t, line, y, 0) < 0) {
            free(line);
            cairo_surface_destroy(img);
            *err = "damaged page";
            return NULL;
        }
        unsigned char *row = dst + (size_t)y * (size_t)stride;
        for (size_t i = 0; i < row_bytes; i++) {
            unsigned char b = invert ? (unsigned char)~line[i] : line[i];
            if (i == row_bytes - 1)
                b &= tail; /* the padding bits past the last pixel */
            row[i] = bit_order(b);
        }
    }
    free(line);
    cairo_surface_mark_dirty(img);
    return img;
}

/* Any other page (grey, colour, tiled) through libtiff's RGBA reader. NULL with *err. */
static cairo_surface_t *read_rgb(TIFF *t, uint32_t w, uint32_t h, const char **err)
{
    if ((long long)w * h > MAX_RGB_PIXELS) {
        *err = "page too large";
        return NULL;
    }
    uint32_t *raster = xmalloc((size_t)w * h * sizeof(uint32_t));
    if (!TIFFReadRGBAImageOriented(t, w, h, raster, ORIENTATION_TOPLEFT, 0)) {
        free(raster);
        *err = "damaged page";
        return NULL;
    }
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)w, (int)h);
    if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
        free(raster);
        cairo_surface_destroy(img);
        *err = "page too large";
        return NULL;
    }
    unsigned char *dst = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    for (uint32_t y = 0; y < h; y++) {
        uint32_t *row = (uint32_t *)(void *)(dst + (size_t)y * (size_t)stride);
        for (uint32_t x = 0; x < w; x++) {
            uint32_t p = raster[(size_t)y * w + x];
            row[x] = TIFFGetR(p) << 16 | TIFFGetG(p) << 8 | TIFFGetB(p);
        }
    }
    free(raster);
    cairo_surface_mark_dirty(img);
    return img;
}

/* Dots per inch of the current page, each way; fax defaults when the tags are missing. */
static void page_dpi(TIFF *t, double *xdpi, double *ydpi)
{
    float xr = 0, yr = 0;
    uint16_t unit = RESUNIT_INCH;
    TIFFGetField(t, TIFFTAG_XRESOLUTION, &xr);
    TIFFGetField(t, TIFFTAG_YRESOLUTION, &yr);
    TIFFGetFieldDefaulted(t, TIFFTAG_RESOLUTIONUNIT, &unit);
    double f = unit == RESUNIT_CENTIMETER ? 2.54 : 1.0;
    *xdpi = xr > 0 ? xr * f : 204.0;
    *ydpi = yr > 0 ? yr * f : *xdpi;
    if (*xdpi < 10 || *xdpi > 10000)
        *xdpi = 204.0;
    if (*ydpi < 10 || *ydpi > 10000)
        *ydpi = *xdpi;
}

/* One page drawn onto the PDF surface at its physical size. 0, or -1 with *err. */
static int draw_page(TIFF *t, cairo_surface_t *pdf, const char **err)
{
    uint32_t w = 0, h = 0;
    uint16_t bps = 1, spp = 1;
    TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w);
    TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h);
    TIFFGetFieldDefaulted(t, TIFFTAG_BITSPERSAMPLE, &bps);
    TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &spp);
    double xdpi, ydpi;
    page_dpi(t, &xdpi, &ydpi);
    double wpt = w * 72.0 / xdpi, hpt = h * 72.0 / ydpi;
    if (w == 0 || h == 0 || w > 60000 || h > 60000 || wpt > PDF_MAX_POINTS ||
        hpt > PDF_MAX_POINTS) {
        *err = "page without a usable size";
        return -1;
    }
    bool bilevel = bps == 1 && spp == 1 && !TIFFIsTiled(t);
    cairo_surface_t *img = bilevel ? read_mask(t, w, h, err) : read_rgb(t, w, h, err);
    if (!img)
        return -1;
    cairo_pdf_surface_set_size(pdf, wpt, hpt);
    cairo_t *cr = cairo_create(pdf);
    cairo_scale(cr, 72.0 / xdpi, 72.0 / ydpi);
    if (bilevel) {
        /* white paper, black through the 1-bit mask: an /ImageMask, about fax-sized */
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_mask_surface(cr, img, 0, 0);
    } else {
        cairo_set_source_surface(cr, img, 0, 0);
        cairo_paint(cr);
    }
    cairo_show_page(cr);
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    cairo_surface_destroy(img);
    if (st != CAIRO_STATUS_SUCCESS) {
        *err = "cannot draw the page";
        return -1;
    }
    return 0;
}

unsigned char *fax_tiff_to_pdf(const unsigned char *data, size_t len, int max_pages,
                               size_t *out_len, int *pages_out, const char **err)
{
    TIFF *t = fax_tiff_open(data, len);
    if (!t) {
        *err = "damaged TIFF";
        return NULL;
    }
    struct growbuf b = {0};
    /* the size is set again for every page before it is drawn */
    cairo_surface_t *pdf = cairo_pdf_surface_create_for_stream(buf_write, &b, 612, 792);
    cairo_pdf_surface_set_metadata(pdf, CAIRO_PDF_METADATA_TITLE, "Fax");
    cairo_pdf_surface_set_metadata(pdf, CAIRO_PDF_METADATA_CREATOR, "omniccd");
    int pages = 0, rc = 0;
    do {
        if (++pages > max_pages) {
            *err = "too many pages";
            rc = -1;
            break;
        }
        rc = draw_page(t, pdf, err);
    } while (rc == 0 && TIFFReadDirectory(t));
    TIFFClose(t);
    cairo_surface_finish(pdf);
    if (rc == 0 && cairo_surface_status(pdf) != CAIRO_STATUS_SUCCESS) {
        *err = "cannot write the PDF";
        rc = -1;
    }
    cairo_surface_destroy(pdf);
    if (rc < 0) {
        free(b.d);
        return NULL;
    }
    *out_len = b.len;
    if (pages_out)
        *pages_out = pages;
    return b.d;
}

/* ---- the stored PDF of a stored document (worker threads) ---- */

static char *link_path(const char *state_dir, const char *sha)
{
    return xasprintf("%s/attachments/%.2s/%s.pdf", state_dir, sha, sha);
}

/* The PDF's sha named by the link file, when it names a stored file. */
static bool read_link(const char *state_dir, const char *sha, char out[65])
{
    char *path = link_path(state_dir, sha);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, out, 64);
    close(fd);
    out[n == 64 ? 64 : 0] = '\0';
    return n == 64 && attachment_sha_valid(out);
}

/* The link is a cache entry: written to a temporary name and renamed (never half there),
 * not fsynced (lost in a crash, the PDF is made again on the next request). */
static void write_link(const char *state_dir, const char *sha, const char *pdf_sha)
{
    char *path = link_path(state_dir, sha);
    char *tmp = xasprintf("%s.tmp.%ld", path, (long)gettid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    bool ok = fd >= 0 && write(fd, pdf_sha, 64) == 64;
    if (fd >= 0)
        close(fd);
    if (!ok || rename(tmp, path) < 0)
        unlink(tmp);
    free(tmp);
    free(path);
}

int fax_pdf_of(const char *state_dir, const char *sha, int max_pages, bool want_bytes,
               struct fax_pdf *out)
{
    memset(out, 0, sizeof(*out));
    size_t len = 0;
    unsigned char *doc = attachment_get(state_dir, sha, (size_t)PDF_MAX_READ, &len, NULL, NULL);
    if (!doc) {
        out->err = "no such document";
        return FAX_PDF_NOT_FOUND;
    }
    if (len >= 5 && memcmp(doc, "%PDF-", 5) == 0) {
        /* a PDF fax: served as received */
        snprintf(out->sha, sizeof(out->sha), "%s", sha);
        if (want_bytes) {
            out->data = doc;
            out->len = len;
        } else {
            free(doc);
        }
        return 0;
    }
    if (!(len >= 4 && ((doc[0] == 'I' && doc[1] == 'I') || (doc[0] == 'M' && doc[1] == 'M')))) {
        free(doc);
        out->err = "not a fax document (TIFF or PDF)";
        return FAX_PDF_NOT_FOUND;
    }
    if (read_link(state_dir, sha, out->sha)) {
        if (!want_bytes) {
            free(doc);
            return 0;
        }
        out->data =
            attachment_get(state_dir, out->sha, (size_t)PDF_MAX_READ, &out->len, NULL, NULL);
        if (out->data) {
            free(doc);
            return 0;
        }
        out->sha[0] = '\0'; /* the link outlived its PDF: make it again */
    }
    size_t pdf_len = 0;
    unsigned char *pdf = fax_tiff_to_pdf(doc, len, max_pages, &pdf_len, &out->pages, &out->err);
    free(doc);
    if (!pdf)
        return FAX_PDF_UNREADABLE;
    char *err = NULL;
    if (attachment_put(state_dir, pdf, pdf_len, NULL, "application/pdf", "fax.pdf", out->sha,
                       &err) < 0) {
        free(err);
        free(pdf);
        out->err = "cannot store the PDF";
        return FAX_PDF_STORE;
    }
    write_link(state_dir, sha, out->sha);
    out->made = true;
    if (want_bytes) {
        out->data = pdf;
        out->len = pdf_len;
    } else {
        free(pdf);
    }
    return 0;
}
