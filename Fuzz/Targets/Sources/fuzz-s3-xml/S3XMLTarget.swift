import CairnCore
import FuzzSupport

/// What an S3 store sends back as XML (`ListBucketResult`, `Error`, `DeleteResult`): from the
/// network, so possibly hostile. The bytes are the whole reply body.
///
/// The reader must refuse what it cannot read with an error, never trap, never nest deeper than
/// `S3XML.maxDepth` (the walk below would find it), and never hold more than three bytes of text
/// per byte it was sent.
@main
enum S3XMLTarget {
    static func main() {
        FuzzDriver.run { buffer in
            let bytes = Array(buffer)
            guard let root = try? S3XML.parse(bytes, what: "the fuzzed reply") else { return }
            var textBytes = 0
            func walk(_ element: S3XML.Element, depth: Int) {
                guard depth <= S3XML.maxDepth else { fatalError("an element nests deeper than maxDepth") }
                textBytes += element.text.utf8.count
                for child in element.children { walk(child, depth: depth + 1) }
            }
            walk(root, depth: 0)
            // Entities and character references only shrink text (`&amp;` is five bytes for one;
            // `&#x10FFFF;` ten for four); a byte that is not UTF-8 becomes U+FFFD, three bytes. So
            // the text is at most three times the reply (found by this target: a reply of 0xBA bytes).
            guard textBytes <= 3 * bytes.count else { fatalError("more text than three times the reply") }
            // What the client reads of a listing and of an error document.
            for entry in root.children("Contents") { _ = (entry.text(of: "Key"), entry.text(of: "Size")) }
            _ = (root.text(of: "IsTruncated"), root.text(of: "NextContinuationToken"))
            _ = (root.text(of: "Code"), root.text(of: "Message"))
        }
    }
}
