#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <limits.h>
#include <stdint.h>

// OSSL_PARAM arrays hold pointers to their names and values, which Swift cannot keep alive across
// the call; these helpers build them in C, where every pointer lives on the stack until the call
// returns. Only Sources/CairnCore/Crypto/ calls them. Each returns 1 on success, 0 on failure.

/// HKDF-SHA256 (RFC 5869, extract then expand) of `key` into `out`.
static inline int cairn_hkdf_sha256(const unsigned char *key, size_t keylen, const unsigned char *salt,
                                    size_t saltlen, const unsigned char *info, size_t infolen, unsigned char *out,
                                    size_t outlen) {
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (kdf == NULL) return 0;
    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (ctx == NULL) return 0;
    OSSL_PARAM params[5], *p = params;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, keylen);
    if (saltlen > 0) *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
    if (infolen > 0) *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, infolen);
    *p = OSSL_PARAM_construct_end();
    int ok = EVP_KDF_derive(ctx, out, outlen, params);
    EVP_KDF_CTX_free(ctx);
    return ok == 1;
}

/// scrypt (RFC 7914) through EVP_KDF "SCRYPT", with the memory limit passed explicitly: the
/// older EVP_PBE_scrypt with maxmem 0 caps memory at 32 MB, below N=2^16, r=8.
static inline int cairn_scrypt(const unsigned char *pass, size_t passlen, const unsigned char *salt, size_t saltlen,
                               uint64_t n, uint32_t r, uint32_t p, uint64_t maxmem, unsigned char *out,
                               size_t outlen) {
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
    if (kdf == NULL) return 0;
    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (ctx == NULL) return 0;
    OSSL_PARAM params[7], *q = params;
    *q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)pass, passlen);
    *q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
    *q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
    *q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
    *q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p);
    *q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem);
    *q = OSSL_PARAM_construct_end();
    int ok = EVP_KDF_derive(ctx, out, outlen, params);
    EVP_KDF_CTX_free(ctx);
    return ok == 1;
}

/// A keyed HMAC-SHA256 context, or NULL.
static inline EVP_MAC_CTX *cairn_hmac_sha256_new(const unsigned char *key, size_t keylen) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) return NULL;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    if (ctx == NULL) return NULL;
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(ctx, key, keylen, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/// HMAC-SHA256 of `data` under the context's key (re-initialised, the key kept) into `out` (32 bytes).
static inline int cairn_hmac_sha256(EVP_MAC_CTX *ctx, const unsigned char *data, size_t len, unsigned char *out) {
    size_t written = 0;
    if (EVP_MAC_init(ctx, NULL, 0, NULL) != 1) return 0;
    if (len > 0 && EVP_MAC_update(ctx, data, len) != 1) return 0;
    return EVP_MAC_final(ctx, out, &written, 32) == 1 && written == 32;
}

/// A cipher context set up for AES-256-GCM with a 12-byte nonce (no key yet), or NULL.
static inline EVP_CIPHER_CTX *cairn_aes256gcm_new(void) {
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    if (cipher == NULL) return NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = ctx != NULL && EVP_EncryptInit_ex2(ctx, cipher, NULL, NULL, NULL) == 1;
    EVP_CIPHER_free(cipher);  // the context holds its own reference
    if (!ok) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/// AES-256-GCM encryption of `in` into `out` (same length; may be `in`) and the 16-byte tag.
/// Only the key schedule is redone per call: the context keeps its cipher.
static inline int cairn_aes256gcm_seal(EVP_CIPHER_CTX *ctx, const unsigned char *key, const unsigned char *nonce,
                                       const unsigned char *aad, size_t aadlen, const unsigned char *in,
                                       size_t inlen, unsigned char *out, unsigned char *tag) {
    int n = 0;
    if (inlen > INT_MAX || aadlen > INT_MAX) return 0;
    if (EVP_EncryptInit_ex2(ctx, NULL, key, nonce, NULL) != 1) return 0;
    if (aadlen > 0 && EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1) return 0;
    if (inlen > 0 && EVP_EncryptUpdate(ctx, out, &n, in, (int)inlen) != 1) return 0;
    if (EVP_EncryptFinal_ex(ctx, out + inlen, &n) != 1) return 0;
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1;
}

/// AES-256-GCM decryption: 1 when the tag holds, 0 when it does not (nothing in `out` may be
/// used then), -1 when OpenSSL failed otherwise.
static inline int cairn_aes256gcm_open(EVP_CIPHER_CTX *ctx, const unsigned char *key, const unsigned char *nonce,
                                       const unsigned char *aad, size_t aadlen, const unsigned char *in,
                                       size_t inlen, const unsigned char *tag, unsigned char *out) {
    int n = 0;
    if (inlen > INT_MAX || aadlen > INT_MAX) return -1;
    if (EVP_DecryptInit_ex2(ctx, NULL, key, nonce, NULL) != 1) return -1;
    if (aadlen > 0 && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1) return -1;
    if (inlen > 0 && EVP_DecryptUpdate(ctx, out, &n, in, (int)inlen) != 1) return -1;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag) != 1) return -1;
    return EVP_DecryptFinal_ex(ctx, out + inlen, &n) == 1 ? 1 : 0;
}
