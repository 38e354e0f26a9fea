// swift-tools-version: 6.2
import PackageDescription

/// Every module is written with `any` spelled out for existentials and with internal imports,
/// so a dependency appears in a module's interface only where it says `public import`.
let strictness: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .treatWarning("ExistentialAny", as: .error),
]

let package = Package(
    name: "Cairn",
    products: [
        .executable(name: "cairn", targets: ["cairn"]),
        .library(name: "CairnCore", targets: ["CairnCore"]),
        .library(name: "CairnServe", targets: ["CairnServe"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CLinux"),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(
            name: "CairnCore",
            dependencies: [
                "CZstd", "CCrypto", "CZlib", "CLinux",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strictness
        ),
        .target(
            name: "CairnServe",
            dependencies: [
                "CairnCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictness
        ),
        // TLS for the NBD server, apart so that CairnServe (and the fuzz targets) link no TLS library.
        .target(
            name: "CairnServeTLS",
            dependencies: [
                "CairnCore", "CairnServe",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictness
        ),
        // A repository on an S3 object store (issue 15): SigV4, the HTTP client, `S3Storage`. Apart so
        // that CairnCore links no HTTP client.
        .target(
            name: "CairnS3",
            dependencies: [
                "CairnCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictness
        ),
        .executableTarget(
            name: "cairn",
            dependencies: [
                "CairnCore",
                "CairnS3",
                "CairnServe",
                "CairnServeTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictness
        ),
        .target(
            name: "CairnTestSupport",
            dependencies: ["CairnCore"],
            path: "Tests/CairnTestSupport",
            swiftSettings: strictness
        ),
        .testTarget(
            name: "CairnCoreTests", dependencies: ["CairnCore", "CairnTestSupport"], swiftSettings: strictness),
        .testTarget(
            name: "CairnCLITests", dependencies: ["CairnCore", "CairnTestSupport"], swiftSettings: strictness),
        .testTarget(
            name: "CairnS3Tests", dependencies: ["CairnCore", "CairnS3", "CairnTestSupport"],
            swiftSettings: strictness),
    ]
)
