// swift-tools-version: 6.1
import PackageDescription

// Micro-benchmarks of Cairn's hot stages, as a plain executable in its own package so that
// `swift test` at the root never builds it. Run: `swift run -c release --package-path Benchmarks/Micro`.
let package = Package(
    name: "CairnMicro",
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(name: "cairn-micro", dependencies: [.product(name: "CairnCore", package: "main")])
    ]
)
