/* A stand-in for libamdhip64 and librocblas, for tests on machines without
 * an AMD GPU. Built twice by tests/mock_runtime.rs: once as libamdhip64.so.7
 * (-DMOCK_HIP) and once as librocblas.so.5 (-DMOCK_ROCBLAS).
 *
 * "Device memory" is host memory, so copies and GEMMs really run; kernels do
 * not (a launch is validated and logged, nothing executes). What this checks
 * is the plumbing the Rust side owns: the dlopen table, device selection and
 * its messages, property reading, module loading and kernel lookup by name
 * (against the real embedded code objects), launch geometry, and the
 * rocblas_gemm_ex argument order and modes.
 *
 * Behaviour is steered by environment variables, read on every call:
 *   VITRINE_MOCK_DEVICES  device count (default 1)
 *   VITRINE_MOCK_ARCH     gcnArchName (default gfx942:sramecc+:xnack-)
 *   VITRINE_MOCK_WARP     warpSize reported (default: 64 for gfx9*, else 32)
 *   VITRINE_MOCK_MEM      bytes a single hipMalloc may take (default 1 GiB)
 *   VITRINE_MOCK_LOG      file that launches are appended to
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MOCK_HIP
static long env_long(const char *name, long fallback) {
  const char *v = getenv(name);
  return v && *v ? strtol(v, NULL, 10) : fallback;
}

static const char *arch_name(void) {
  const char *v = getenv("VITRINE_MOCK_ARCH");
  return v && *v ? v : "gfx942:sramecc+:xnack-";
}

static int warp_size(void) {
  return (int)env_long("VITRINE_MOCK_WARP", strncmp(arch_name(), "gfx9", 4) == 0 ? 64 : 32);
}

typedef int hipError_t;
enum {
  hipSuccess = 0,
  hipErrorInvalidValue = 1,
  hipErrorOutOfMemory = 2,
  hipErrorInvalidConfiguration = 9,
  hipErrorNoDevice = 100,
  hipErrorInvalidDevice = 101,
  hipErrorInvalidImage = 200,
  hipErrorNotFound = 500,
};

/* Offsets in hipDeviceProp_tR0600 (HIP 7.1 header, x86-64). */
enum { PROPS_SIZE = 1472, OFF_TOTAL_MEM = 288, OFF_WARP = 308, OFF_ARCH = 1160 };

static int current = 0;

hipError_t hipGetDeviceCount(int *n) {
  *n = (int)env_long("VITRINE_MOCK_DEVICES", 1);
  return *n > 0 ? hipSuccess : hipErrorNoDevice;
}

hipError_t hipSetDevice(int d) {
  if (d < 0 || d >= env_long("VITRINE_MOCK_DEVICES", 1)) return hipErrorInvalidDevice;
  current = d;
  return hipSuccess;
}

hipError_t hipGetDevicePropertiesR0600(void *p, int d) {
  if (d < 0 || d >= env_long("VITRINE_MOCK_DEVICES", 1)) return hipErrorInvalidDevice;
  char *b = p;
  memset(b, 0, PROPS_SIZE);
  snprintf(b, 256, "Mock Instinct %d", d);
  size_t total = (size_t)64 << 30;
  memcpy(b + OFF_TOTAL_MEM, &total, sizeof total);
  int w = warp_size();
  memcpy(b + OFF_WARP, &w, sizeof w);
  snprintf(b + OFF_ARCH, 256, "%s", arch_name());
  return hipSuccess;
}

hipError_t hipDeviceGetAttribute(int *v, int attr, int d) {
  if (d < 0 || d >= env_long("VITRINE_MOCK_DEVICES", 1)) return hipErrorInvalidDevice;
  *v = attr == 87 /* hipDeviceAttributeWarpSize */ ? warp_size() : 0;
  return hipSuccess;
}

hipError_t hipRuntimeGetVersion(int *v) {
  *v = 70051831;
  return hipSuccess;
}

const char *hipGetErrorName(hipError_t e) {
  switch (e) {
    case hipErrorOutOfMemory: return "hipErrorOutOfMemory";
    case hipErrorInvalidConfiguration: return "hipErrorInvalidConfiguration";
    case hipErrorInvalidImage: return "hipErrorInvalidImage";
    case hipErrorNotFound: return "hipErrorNotFound";
    default: return "hipErrorMock";
  }
}

hipError_t hipMalloc(void **p, size_t n) {
  if (n == 0) return hipErrorInvalidValue;
  if ((long)n > env_long("VITRINE_MOCK_MEM", 1L << 30)) return hipErrorOutOfMemory;
  *p = calloc(1, n);
  return *p ? hipSuccess : hipErrorOutOfMemory;
}

hipError_t hipFree(void *p) {
  free(p);
  return hipSuccess;
}

/* Page-locked memory is ordinary memory here; VITRINE_MOCK_NO_PINNED=1
 * refuses it, so the pageable path runs too. */
hipError_t hipHostMalloc(void **p, size_t n, unsigned int flags) {
  (void)flags;
  if (env_long("VITRINE_MOCK_NO_PINNED", 0)) return hipErrorOutOfMemory;
  *p = malloc(n);
  return *p ? hipSuccess : hipErrorOutOfMemory;
}

hipError_t hipHostFree(void *p) {
  free(p);
  return hipSuccess;
}

hipError_t hipMemcpy(void *dst, const void *src, size_t n, int kind) {
  if (kind != 1 && kind != 2) return hipErrorInvalidValue; /* H2D, D2H only */
  memcpy(dst, src, n);
  return hipSuccess;
}

hipError_t hipMemGetInfo(size_t *free_b, size_t *total) {
  *free_b = (size_t)env_long("VITRINE_MOCK_MEM", 1L << 30);
  *total = (size_t)64 << 30;
  return hipSuccess;
}

hipError_t hipStreamCreate(void **s) {
  *s = malloc(1);
  return hipSuccess;
}
hipError_t hipStreamDestroy(void *s) {
  free(s);
  return hipSuccess;
}
hipError_t hipStreamSynchronize(void *s) {
  (void)s;
  return hipSuccess;
}

/* A module remembers its image and its extent (end of the section table). */
typedef struct {
  const unsigned char *image;
  size_t size;
} module_t;

hipError_t hipModuleLoadData(void **m, const void *image) {
  const unsigned char *b = image;
  uint16_t machine;
  memcpy(&machine, b + 18, 2);
  if (memcmp(b, "\x7f" "ELF", 4) != 0 || b[4] != 2 || machine != 224) return hipErrorInvalidImage;
  /* The code object must be for the device's architecture: its metadata
   * names the target as "amdgcn-amd-amdhsa--<gfx>[:features]". */
  char target[128];
  snprintf(target, sizeof target, "amdgcn-amd-amdhsa--%.*s", (int)strcspn(arch_name(), ":"), arch_name());
  size_t tlen = strlen(target);
  uint64_t shoff;
  uint16_t shentsize, shnum;
  memcpy(&shoff, b + 40, 8);
  memcpy(&shentsize, b + 58, 2);
  memcpy(&shnum, b + 60, 2);
  module_t *mod = malloc(sizeof *mod);
  mod->image = b;
  mod->size = shoff + (size_t)shentsize * shnum;
  int found = 0;
  for (size_t i = 0; i + tlen < mod->size && !found; i++) {
    unsigned char next = b[i + tlen];
    found = memcmp(b + i, target, tlen) == 0 && !((next >= '0' && next <= '9') || (next >= 'a' && next <= 'z'));
  }
  if (!found) {
    free(mod);
    return hipErrorInvalidImage;
  }
  *m = mod;
  return hipSuccess;
}

hipError_t hipModuleUnload(void *m) {
  free(m);
  return hipSuccess;
}

/* A kernel NAME exists when the image holds both "NAME\0" and "NAME.kd\0". */
static int has_string(const module_t *m, const char *s) {
  size_t n = strlen(s) + 1;
  for (size_t i = 0; i + n <= m->size; i++)
    if (memcmp(m->image + i, s, n) == 0 && (i == 0 || m->image[i - 1] == '\0')) return 1;
  return 0;
}

hipError_t hipModuleGetFunction(void **f, void *module, const char *name) {
  const module_t *m = module;
  char kd[512];
  snprintf(kd, sizeof kd, "%s.kd", name);
  if (!has_string(m, name) || !has_string(m, kd)) return hipErrorNotFound;
  *f = strdup(name);
  return hipSuccess;
}

hipError_t hipModuleLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                 unsigned bz, unsigned shared, void *stream, void **params, void **extra) {
  (void)shared;
  (void)extra;
  if (!f || !stream || !params || gx == 0 || gy != 1 || gz != 1 || by != 1 || bz != 1 || bx == 0 ||
      bx > 1024 || bx % (unsigned)warp_size() != 0)
    return hipErrorInvalidConfiguration;
  const char *log = getenv("VITRINE_MOCK_LOG");
  if (log && *log) {
    FILE *fp = fopen(log, "a");
    if (fp) {
      fprintf(fp, "%s %u %u\n", (const char *)f, gx, bx);
      fclose(fp);
    }
  }
  return hipSuccess;
}
#endif /* MOCK_HIP */

#ifdef MOCK_ROCBLAS
typedef int rocblas_status;
enum { ok = 0, invalid_handle = 1, not_implemented = 2, invalid_size = 4, invalid_value = 11 };
enum { op_n = 111, op_t = 112, f16_r = 150, f32_r = 151, bf16_r = 168 };

typedef struct {
  void *stream;
  int pointer_mode, atomics_mode;
} handle_t;

rocblas_status rocblas_create_handle(void **h) {
  handle_t *t = calloc(1, sizeof *t);
  t->atomics_mode = 1; /* rocBLAS' default: allowed */
  *h = t;
  return ok;
}
rocblas_status rocblas_destroy_handle(void *h) {
  free(h);
  return ok;
}
rocblas_status rocblas_set_stream(void *h, void *s) {
  if (!h || !s) return invalid_handle;
  ((handle_t *)h)->stream = s;
  return ok;
}
rocblas_status rocblas_set_pointer_mode(void *h, int mode) {
  ((handle_t *)h)->pointer_mode = mode;
  return ok;
}
rocblas_status rocblas_set_atomics_mode(void *h, int mode) {
  ((handle_t *)h)->atomics_mode = mode;
  return ok;
}
const char *rocblas_status_to_string(rocblas_status s) {
  return s == invalid_value ? "rocblas_status_invalid_value" : "rocblas_status_mock";
}

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: renormalise */
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        exp--;
      }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* Round to nearest even; enough for the finite, normal values tests use. */
static uint16_t float_to_half(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
  uint32_t man = x & 0x7fffff;
  if (exp <= 0) return (uint16_t)sign; /* flush tiny values: not exercised */
  if (exp >= 31) return (uint16_t)(sign | 0x7c00);
  uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
  uint32_t rest = man & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return (uint16_t)h;
}

static float bf16_to_float(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t float_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

static float load(const void *p, int type, size_t i) {
  if (type == f32_r) return ((const float *)p)[i];
  uint16_t v = ((const uint16_t *)p)[i];
  return type == f16_r ? half_to_float(v) : bf16_to_float(v);
}

static void store(void *p, int type, size_t i, float v) {
  if (type == f32_r)
    ((float *)p)[i] = v;
  else
    ((uint16_t *)p)[i] = type == f16_r ? float_to_half(v) : float_to_bf16(v);
}

/* The documented parameter order of rocblas_gemm_ex; column-major. */
rocblas_status rocblas_gemm_ex(void *handle, int trans_a, int trans_b, int m, int n, int k, const void *alpha,
                               const void *a, int a_type, int lda, const void *b, int b_type, int ldb,
                               const void *beta, const void *c, int c_type, int ldc, void *d, int d_type,
                               int ldd, int compute_type, int algo, int solution_index, unsigned flags) {
  const handle_t *h = handle;
  if (!h || !h->stream) return invalid_handle;
  /* vitrine promises host-side scalars, no atomics, f32 compute, one type. */
  if (h->pointer_mode != 0 || h->atomics_mode != 0) return invalid_value;
  if (compute_type != f32_r || algo != 0 || solution_index != 0 || flags != 0) return invalid_value;
  if (a_type != b_type || a_type != c_type || a_type != d_type) return invalid_value;
  if (a_type != f32_r && a_type != f16_r && a_type != bf16_r) return not_implemented;
  if ((trans_a != op_n && trans_a != op_t) || (trans_b != op_n && trans_b != op_t)) return invalid_value;
  if (m < 0 || n < 0 || k < 0) return invalid_size;
  int rows_a = trans_a == op_n ? m : k, rows_b = trans_b == op_n ? k : n;
  if (lda < (rows_a > 1 ? rows_a : 1) || ldb < (rows_b > 1 ? rows_b : 1) || ldc < (m > 1 ? m : 1) || ldd != ldc ||
      c != d)
    return invalid_size;
  float al = *(const float *)alpha, be = *(const float *)beta;
  for (int j = 0; j < n; j++) {
    for (int i = 0; i < m; i++) {
      float acc = 0.0f;
      for (int p = 0; p < k; p++) {
        size_t ia = trans_a == op_n ? (size_t)p * lda + i : (size_t)i * lda + p;
        size_t ib = trans_b == op_n ? (size_t)j * ldb + p : (size_t)p * ldb + j;
        acc += load(a, a_type, ia) * load(b, b_type, ib);
      }
      size_t ic = (size_t)j * ldc + i;
      float out = al * acc + (be != 0.0f ? be * load(c, c_type, ic) : 0.0f);
      store(d, d_type, ic, out);
    }
  }
  return ok;
}
#endif /* MOCK_ROCBLAS */
