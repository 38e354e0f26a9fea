// CLibFuzzer only declares libFuzzer's driver entry (include/CLibFuzzer.h); the definition comes
// from compiler-rt's libFuzzer, linked by `-sanitize=fuzzer`. SwiftPM needs one C file per target.
