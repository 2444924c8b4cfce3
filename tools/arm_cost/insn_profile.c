/*
 * insn_profile: a small QEMU TCG plugin (user mode) that counts executed guest
 * instructions, in total and per function.
 *
 * Every translated block is cut into runs of instructions that belong to the same
 * place: the symbol QEMU knows for the address (the main executable's and the
 * dynamic loader's symbol tables), or, for code without a symbol (shared libraries
 * loaded by ld.so: libc, libm, ...), a 64 KiB region named "?ext:0xADDR", or
 * "?main:0xADDR" inside the main executable's text. Each run adds its length to its
 * place's counter when its first instruction executes (an inline add, no callback).
 *
 * Usage:  qemu-arm -plugin ./libinsn_profile.so,out=FILE  PROGRAM ARGS...
 * FILE gets "total<TAB>N" and then one "N<TAB>place" line per place.
 *
 * Counters are not atomic: meant for single-threaded guests.
 * Built against include/qemu/qemu-plugin.h of the QEMU version that loads it.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define SLOTS (1u << 16) /* open-addressing table; far more than the places used */

struct place {
    const char *sym; /* symbol string owned by QEMU (stable), or NULL */
    uint64_t region; /* for sym == NULL: address >> 16 */
    uint64_t count;
    int used;
};

static struct place table[SLOTS];
static uint64_t total;
static unsigned n_places;
static char *out_path;
static uint64_t main_lo, main_hi;

static struct place *find(const char *sym, uint64_t region)
{
    uint64_t h = sym ? (uint64_t)(uintptr_t)sym : region * 0x9e3779b97f4a7c15ull + 1;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    for (unsigned i = 0; i < SLOTS; i++) {
        struct place *p = &table[(h + i) & (SLOTS - 1)];
        if (!p->used) {
            if (n_places + 1 >= SLOTS) {
                fprintf(stderr, "insn_profile: place table full\n");
                abort();
            }
            p->used = 1;
            p->sym = sym;
            p->region = region;
            n_places++;
            return p;
        }
        if (p->sym == sym && (sym || p->region == region)) {
            return p;
        }
    }
    abort();
}

static struct place *place_of(struct qemu_plugin_insn *insn)
{
    const char *sym = qemu_plugin_insn_symbol(insn);
    uint64_t va = qemu_plugin_insn_vaddr(insn);
    if (sym && *sym) {
        return find(sym, 0);
    }
    /* keep "inside the main text" apart from other unnamed code */
    uint64_t region = va >> 16;
    if (va >= main_lo && va < main_hi) {
        region |= 1ull << 63;
    }
    return find(NULL, region);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    if (!main_hi) {
        /* not known yet when the plugin is installed (before the ELF is loaded) */
        main_lo = qemu_plugin_start_code();
        main_hi = qemu_plugin_end_code();
    }
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
    size_t i = 0;
    while (i < n) {
        struct qemu_plugin_insn *first = qemu_plugin_tb_get_insn(tb, i);
        struct place *p = place_of(first);
        size_t j = i + 1;
        while (j < n && place_of(qemu_plugin_tb_get_insn(tb, j)) == p) {
            j++;
        }
        qemu_plugin_register_vcpu_insn_exec_inline(first, QEMU_PLUGIN_INLINE_ADD_U64,
                                                   &p->count, j - i);
        i = j;
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *f = fopen(out_path, "w");
    if (!f) {
        perror(out_path);
        return;
    }
    fprintf(f, "total\t%" PRIu64 "\n", total);
    for (unsigned i = 0; i < SLOTS; i++) {
        struct place *p = &table[i];
        if (!p->used || !p->count) {
            continue;
        }
        if (p->sym) {
            fprintf(f, "%" PRIu64 "\t%s\n", p->count, p->sym);
        } else {
            fprintf(f, "%" PRIu64 "\t?%s:0x%" PRIx64 "\n", p->count,
                    (p->region >> 63) ? "main" : "ext",
                    (uint64_t)((p->region & ~(1ull << 63)) << 16));
        }
    }
    fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = strdup(argv[i] + 4);
        } else {
            fprintf(stderr, "insn_profile: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    if (!out_path) {
        fprintf(stderr, "insn_profile: needs out=FILE\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
