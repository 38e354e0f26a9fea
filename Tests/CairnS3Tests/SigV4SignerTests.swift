import CairnCore
import Testing

@testable import CairnS3

/// Known answers from AWS's published examples: the Signature Version 4 test suite's
/// `get-vanilla`, and the four examples of the S3 guide's "Examples: Signature Calculations in
/// AWS Signature Version 4" (GET object with a range, PUT object, GET ?lifecycle, GET bucket list).
@Suite struct SigV4SignerTests {
    static let suiteKeys = S3Credentials(
        accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    static let s3Keys = S3Credentials(
        accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    static let empty = SigV4Signer.emptyPayloadHash

    @Test func testSuiteGetVanilla() {
        let signer = SigV4Signer(credentials: Self.suiteKeys, region: "us-east-1", service: "service")
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]
        let canonical = signer.canonicalRequest(
            method: "GET", path: "/", query: [], headers: headers, payloadHash: Self.empty)
        #expect(
            canonical.text
                == "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\(Self.empty)"
        )
        #expect(
            signer.stringToSign(canonicalRequest: canonical.text, amzDate: "20150830T123600Z")
                == "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
                + "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
        #expect(
            signer.authorization(
                method: "GET", path: "/", query: [], headers: headers, payloadHash: Self.empty,
                amzDate: "20150830T123600Z")
                == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                + "SignedHeaders=host;x-amz-date, "
                + "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    func s3Signature(
        _ method: String, _ path: String, query: [(String, String)] = [], headers: [(String, String)],
        payload: String = SigV4Signer.emptyPayloadHash
    ) -> String {
        let signer = SigV4Signer(credentials: Self.s3Keys, region: "us-east-1")
        let all =
            [
                ("Host", "examplebucket.s3.amazonaws.com"), ("x-amz-date", "20130524T000000Z"),
                ("x-amz-content-sha256", payload),
            ] + headers
        let value = signer.authorization(
            method: method, path: path, query: query, headers: all, payloadHash: payload, amzDate: "20130524T000000Z")
        return String(value.split(separator: "=").last!)
    }

    @Test func s3GetObjectWithRange() {
        #expect(
            s3Signature("GET", "/test.txt", headers: [("Range", "bytes=0-9")])
                == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test func s3PutObjectEncodesThePathOnce() {
        let body = Array("Welcome to Amazon S3.".utf8)
        let hash = SHA256Hasher().digest(body).hex
        #expect(hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let signature = s3Signature(
            "PUT", "/test$file.text",
            headers: [("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
            payload: hash)
        #expect(signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    @Test func s3GetBucketLifecycleFlag() {
        #expect(
            s3Signature("GET", "/", query: [("lifecycle", "")], headers: [])
                == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    @Test func s3ListObjectsSortsTheQuery() {
        #expect(
            s3Signature("GET", "/", query: [("prefix", "J"), ("max-keys", "2")], headers: [])
                == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test func encodingKeepsOnlyUnreservedCharacters() {
        #expect(SigV4Signer.uriEncode("a b/c~d_e.f-g+h=é", keepSlash: true) == "a%20b/c~d_e.f-g%2Bh%3D%C3%A9")
        #expect(SigV4Signer.uriEncode("a/b", keepSlash: false) == "a%2Fb")
    }

    @Test func credentialsFileProfiles() throws {
        let text = """
            [default]
            aws_access_key_id = AKID1
            aws_secret_access_key = secret1

            [ci]
            aws_access_key_id=AKID2
            aws_secret_access_key=secret2
            """
        let ci = try S3Credentials.fromCredentialsFile(text, profile: "ci", path: "f")
        #expect(ci.accessKeyID == "AKID2" && ci.secretAccessKey == "secret2")
        #expect(!"\(ci)".contains("secret2"))
        let error = #expect(throws: CairnError.self) {
            try S3Credentials.fromCredentialsFile(text, profile: "none", path: "f")
        }
        #expect(error?.message.contains("[none]") == true)
        let env = try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "B"])
        #expect(env.accessKeyID == "A")
    }
}
