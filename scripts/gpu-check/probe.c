/* GPU probe for scripts/gpu-check.sh: runs inside a sandbox, talks to the CUDA driver API through
 * dlopen (no CUDA toolkit needed), and prints one `key=value` per line.
 *
 *   probe info            devices, total memory of device 0, free/total as the context sees it
 *   probe alloc MIB [S]   allocates MIB MiB on device 0, prints alloc=ok|fail, then sleeps S s
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef unsigned long long CUdeviceptr;

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe info | alloc MIB [SECONDS]\n");
        return 2;
    }
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) {
        printf("driver=absent\n");
        return 0;
    }
    CUresult (*cuInit)(unsigned) = dlsym(cuda, "cuInit");
    CUresult (*cuDeviceGetCount)(int *) = dlsym(cuda, "cuDeviceGetCount");
    CUresult (*cuDeviceGet)(CUdevice *, int) = dlsym(cuda, "cuDeviceGet");
    CUresult (*cuDeviceTotalMem)(size_t *, CUdevice) = dlsym(cuda, "cuDeviceTotalMem_v2");
    CUresult (*cuCtxCreate)(CUcontext *, unsigned, CUdevice) = dlsym(cuda, "cuCtxCreate_v2");
    CUresult (*cuMemGetInfo)(size_t *, size_t *) = dlsym(cuda, "cuMemGetInfo_v2");
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t) = dlsym(cuda, "cuMemAlloc_v2");
    if (!cuInit || !cuDeviceGetCount || !cuDeviceGet || !cuDeviceTotalMem || !cuCtxCreate || !cuMemGetInfo ||
        !cuMemAlloc) {
        printf("driver=incomplete\n");
        return 1;
    }
    CUresult r = cuInit(0);
    printf("init=%d\n", r);
    if (r != 0) return 0;
    int count = 0;
    cuDeviceGetCount(&count);
    printf("devices=%d\n", count);
    if (count < 1) return 0;
    CUdevice dev;
    cuDeviceGet(&dev, 0);
    size_t total_dev = 0;
    cuDeviceTotalMem(&total_dev, dev);
    printf("device_total_mib=%zu\n", total_dev >> 20);
    CUcontext ctx;
    r = cuCtxCreate(&ctx, 0, dev);
    printf("context=%d\n", r);
    if (r != 0) return 1;
    size_t free_b = 0, total_b = 0;
    cuMemGetInfo(&free_b, &total_b);
    printf("ctx_free_mib=%zu\nctx_total_mib=%zu\n", free_b >> 20, total_b >> 20);
    fflush(stdout);
    if (argv[1][0] == 'a' && argc >= 3) {
        size_t mib = strtoull(argv[2], NULL, 10);
        CUdeviceptr p;
        r = cuMemAlloc(&p, mib << 20);
        printf("alloc_mib=%zu\nalloc=%s\nalloc_result=%d\n", mib, r == 0 ? "ok" : "fail", r);
        fflush(stdout);
        if (argc >= 4) sleep((unsigned)atoi(argv[3]));
    }
    return 0;
}
