// Package mesh is the content plane of a hubmesh node: the local
// content-addressed blob store, local blob upload sessions, the libp2p host
// that carries node-to-node traffic (the Raft stream layer and small RPCs),
// the connection gater that admits only cluster members (SetMembers,
// Admit), and the bitswap exchange that moves blobs between nodes in
// chunks (Exchange).
//
// mesh imports only the root package hubmesh and libraries. It must not
// import registryapi, consensus or node; node adapts mesh to the
// interfaces the other packages consume.
//
// On-disk layout under the node's data directory (the paths are chosen by
// node; these are the conventional ones):
//
//	<data-dir>/
//	├── blobs/                  Store (OpenStore(<data-dir>/blobs))
//	│   ├── sha256/
//	│   │   ├── 00/ … ff/       prefix directories, created on first use
//	│   │   │   └── <hex>       one verified blob, named by its full hex digest
//	│   ├── sha512/             same shape for sha512 digests
//	│   └── tmp/                temp files of Put and Exchange fetches in progress; wiped at open
//	├── uploads/                Uploads (NewUploads(<data-dir>/uploads, ...));
//	│   └── <session-id>        data received so far; the whole dir is wiped at open
//	├── chunks/                 Exchange chunk index (ExchangeConfig.IndexDir): a pebble
//	│                           database mapping chunk CIDs to ranges of blob files;
//	│                           node-local, rebuilt by ChunkRoot when lost
//	└── p2p/
//	    └── identity.key        libp2p private key (protobuf), 0600, created on first start
//
// A file appears under blobs/<alg>/ only by rename after its content was
// hashed, compared with its name and fsynced, so a blob in the tree is
// always complete and verified.
package mesh
