package consensus

import (
	"encoding/binary"

	"github.com/opencontainers/go-digest"
)

// Key layout of the FSM pebble database (Dir/fsm). Repository names,
// tags and digests never contain a NUL byte (the FSM validates them before
// writing), so NUL separates the parts of a composite key and a prefix scan
// over "<prefix><repo>\x00" never strays into a repository whose name merely
// starts with <repo>. Every listing is the lexical order of its keys.
//
//	meta/
//	├── applied                         uint64 BE: index of the last applied Raft entry
//	├── cluster                         JSON ClusterInfo: cluster ID and join-token key (InitCluster)
//	└── count/
//	    ├── repositories                uint64 BE: number of repo/ keys
//	    ├── manifests                   uint64 BE: number of manifest/ keys
//	    └── blobs                       uint64 BE: number of blob/ keys
//	repo/<repo>                         JSON repoRecord
//	manifest/<repo>\x00<digest>         [uint32 BE n][n bytes JSON hubmesh.Manifest without payload][payload bytes]
//	tag/<repo>\x00<tag>                 digest string the tag points at
//	tagrev/<repo>\x00<digest>\x00<tag>  empty: the tags of a manifest (for DeleteManifest)
//	referrer/<repo>\x00<subject>\x00<referrer>
//	                                    JSON hubmesh.Descriptor of the referrer
//	blob/<digest>                       JSON blobRecord: size and replica node IDs
//	link/<repo>\x00<digest>             JSON hubmesh.Descriptor: blob reachable in repo
//	member/<node id>                    JSON Member: a node's addresses and role
//
// The Raft log and stable store live in a separate pebble database
// (Dir/raft, see logstore.go); snapshots are files in Dir/snapshots.
var (
	keyApplied        = []byte("meta/applied")
	keyCountRepos     = []byte("meta/count/repositories")
	keyCountManifests = []byte("meta/count/manifests")
	keyCountBlobs     = []byte("meta/count/blobs")
	keyCluster        = []byte("meta/cluster")

	prefixRepo     = []byte("repo/")
	prefixManifest = []byte("manifest/")
	prefixTag      = []byte("tag/")
	prefixTagRev   = []byte("tagrev/")
	prefixReferrer = []byte("referrer/")
	prefixBlob     = []byte("blob/")
	prefixLink     = []byte("link/")
	prefixMember   = []byte("member/")
)

const sep = 0x00

// key joins a prefix and parts separated by NUL.
func key(prefix []byte, parts ...string) []byte {
	n := len(prefix)
	for _, p := range parts {
		n += len(p) + 1
	}
	k := make([]byte, 0, n)
	k = append(k, prefix...)
	for i, p := range parts {
		if i > 0 {
			k = append(k, sep)
		}
		k = append(k, p...)
	}
	return k
}

// scope is the prefix of every key below parts: key(prefix, parts...)+NUL.
func scope(prefix []byte, parts ...string) []byte {
	return append(key(prefix, parts...), sep)
}

func repoKey(repo string) []byte { return key(prefixRepo, repo) }

func manifestKey(repo string, d digest.Digest) []byte {
	return key(prefixManifest, repo, d.String())
}

func tagKey(repo, tag string) []byte { return key(prefixTag, repo, tag) }

func tagRevKey(repo string, d digest.Digest, tag string) []byte {
	return key(prefixTagRev, repo, d.String(), tag)
}

func referrerKey(repo string, subject, referrer digest.Digest) []byte {
	return key(prefixReferrer, repo, subject.String(), referrer.String())
}

func blobKey(d digest.Digest) []byte { return key(prefixBlob, d.String()) }

func linkKey(repo string, d digest.Digest) []byte { return key(prefixLink, repo, d.String()) }

func memberKey(id string) []byte { return key(prefixMember, id) }

// prefixEnd returns the smallest key greater than every key that starts
// with p, for use as an exclusive upper bound.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// after returns the smallest key strictly greater than k.
func after(k []byte) []byte { return append(append([]byte(nil), k...), sep) }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func readU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
