#ifndef CAIRN_CLIBFUZZER_H
#define CAIRN_CLIBFUZZER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's entry for programs that keep their own `main` (compiler-rt FuzzerInterface.h).
/// SwiftPM links an executable target's `main` to the module's own entry point, so the fuzz
/// targets cannot use libFuzzer's `main`; they call this from theirs.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
