/*
 * Stand-ins for the TensorRT runtime libraries, so that the real Python bindings
 * (tensorrt-cu12-bindings, 10.x and 11.x) import on a machine without TensorRT or a GPU.
 *
 * The bindings' tensorrt.so needs exactly these C entry points (checked with
 * `nm -D --undefined-only tensorrt_bindings/tensorrt.so`; no C++ symbols are needed):
 *   libnvinfer.so.N         createInferBuilder_INTERNAL, createInferRuntime_INTERNAL,
 *                           createInferRefitter_INTERNAL, getPluginRegistry, getBuilderPluginRegistry
 *   libnvonnxparser.so.N    createNvOnnxParser_INTERNAL, createNvOnnxParserRefitter_INTERNAL,
 *                           getNvOnnxParserVersion
 *   libnvinfer_plugin.so.N  initLibNvInferPlugins
 * Every factory returns NULL, so `trt.Builder(logger)` etc. fail cleanly in the bindings: the
 * classes, enums, methods and docstrings are real, nothing can be built or run.
 *
 * Build one library per -D flag: STUB_NVINFER, STUB_NVONNXPARSER, STUB_NVINFER_PLUGIN.
 */
#include <stddef.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

#ifdef STUB_NVINFER
EXPORT void *createInferBuilder_INTERNAL(void *logger, int32_t version) { (void)logger; (void)version; return NULL; }
EXPORT void *createInferRuntime_INTERNAL(void *logger, int32_t version) { (void)logger; (void)version; return NULL; }
EXPORT void *createInferRefitter_INTERNAL(void *engine, void *logger, int32_t version)
{
    (void)engine; (void)logger; (void)version;
    return NULL;
}
EXPORT void *getPluginRegistry(void) { return NULL; }
EXPORT void *getBuilderPluginRegistry(int32_t capability) { (void)capability; return NULL; }
#endif

#ifdef STUB_NVONNXPARSER
EXPORT void *createNvOnnxParser_INTERNAL(void *network, void *logger, int32_t version)
{
    (void)network; (void)logger; (void)version;
    return NULL;
}
EXPORT void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int32_t version)
{
    (void)refitter; (void)logger; (void)version;
    return NULL;
}
EXPORT int getNvOnnxParserVersion(void) { return 0; }
#endif

#ifdef STUB_NVINFER_PLUGIN
EXPORT int initLibNvInferPlugins(void *logger, const char *libNamespace)
{
    (void)logger; (void)libNamespace;
    return 0;
}
#endif
