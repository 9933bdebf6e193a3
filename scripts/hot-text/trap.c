// An LD_AUDIT library for scripts/hot-text.mjs: records which functions of the addon run, in the
// order they first run. When the dynamic linker has mapped the addon (before its constructors
// run), every function start listed in $HOT_TEXT_FUNCS (hex offsets of the unstripped build's
// FUNC symbols) becomes an int3; the first hit of each is recorded and its byte restored. Each
// SIGWINCH writes what was hit so far to $HOT_TEXT_OUT.<n> (one phase of the workload each).
// Page-protection tricks would only say which pages ran; a breakpoint per function also sees
// drop glue, async bodies, std and C code, which compiler instrumentation misses.
#if !defined(__x86_64__) || !defined(__linux__)
#error "scripts/hot-text/trap.c reads x86_64 Linux registers: record on x86_64 Linux"
#endif
#define _GNU_SOURCE
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define MAX_FUNCS (1 << 18)
static uintptr_t base, text_lo, text_hi;
static uint32_t offsets[MAX_FUNCS];
static uint8_t saved[MAX_FUNCS];
static int count;
static uint32_t hits[MAX_FUNCS];
static int hit_count;
static int dumps;

static int find(uint32_t offset) {
  int lo = 0, hi = count - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (offsets[mid] == offset) return mid;
    if (offsets[mid] < offset) lo = mid + 1; else hi = mid - 1;
  }
  return -1;
}

static void on_trap(int sig, siginfo_t *info, void *context) {
  (void)info;
  ucontext_t *uc = context;
  uintptr_t ip = uc->uc_mcontext.gregs[REG_RIP] - 1;
  int i = ip >= text_lo && ip < text_hi ? find((uint32_t)(ip - base)) : -1;
  if (i < 0) {  // not ours: let it kill the process as it would have
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  // Two threads may trap on the same function at once; only the first records it.
  if (__atomic_exchange_n((volatile uint8_t *)ip, saved[i], __ATOMIC_SEQ_CST) == 0xCC)
    hits[__atomic_fetch_add(&hit_count, 1, __ATOMIC_SEQ_CST)] = offsets[i];
  uc->uc_mcontext.gregs[REG_RIP] = ip;
}

static void on_dump(int sig) {
  (void)sig;
  char path[4096], line[16];
  snprintf(path, sizeof path, "%s.%d", getenv("HOT_TEXT_OUT"), dumps++);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int n = __atomic_load_n(&hit_count, __ATOMIC_SEQ_CST);
  for (int i = 0; i < n; i++) write(fd, line, snprintf(line, sizeof line, "%x\n", hits[i]));
  close(fd);
}

static int by_value(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

unsigned int la_version(unsigned int version) {
  (void)version;
  return LAV_CURRENT;
}

unsigned int la_objopen(struct link_map *map, Lmid_t lmid, uintptr_t *cookie) {
  (void)lmid, (void)cookie;
  const char *addon = getenv("HOT_TEXT_ADDON");
  if (text_lo || !addon || !map->l_name || !strstr(map->l_name, addon)) return 0;
  base = map->l_addr;
  ElfW(Ehdr) *ehdr = (void *)base;
  ElfW(Phdr) *phdr = (void *)(base + ehdr->e_phoff);
  for (int i = 0; i < ehdr->e_phnum; i++)
    if (phdr[i].p_type == PT_LOAD && (phdr[i].p_flags & PF_X)) {
      text_lo = (base + phdr[i].p_vaddr) & ~4095UL;
      text_hi = (base + phdr[i].p_vaddr + phdr[i].p_memsz + 4095) & ~4095UL;
    }
  FILE *list = fopen(getenv("HOT_TEXT_FUNCS"), "r");
  unsigned offset;
  while (list && count < MAX_FUNCS && fscanf(list, "%x", &offset) == 1) offsets[count++] = offset;
  if (list) fclose(list);
  qsort(offsets, count, sizeof offsets[0], by_value);
  int unique = 0;  // aliases share a start; patching one twice would save the int3 itself
  for (int i = 0; i < count; i++)
    if (!unique || offsets[unique - 1] != offsets[i]) offsets[unique++] = offsets[i];
  count = unique;
  if (mprotect((void *)text_lo, text_hi - text_lo, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) {
    // A policy against writable code (SELinux execmod, PaX): nothing can be recorded here.
    static const char message[] = "hot-text trap: cannot make the addon's code writable\n";
    write(2, message, sizeof message - 1);
    _exit(3);
  }
  for (int i = 0; i < count; i++) {
    uint8_t *p = (uint8_t *)(base + offsets[i]);
    saved[i] = *p;
    *p = 0xCC;
  }
  struct sigaction trap = {0};
  trap.sa_sigaction = on_trap;
  trap.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGTRAP, &trap, 0);
  signal(SIGWINCH, on_dump);
  return 0;
}
