package consensus

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hubmesh/hubmesh"
)

// TestTypeNumbers pins the log format: a type's number never changes.
func TestTypeNumbers(t *testing.T) {
	want := map[Type]uint16{
		TypePutManifest: 1, TypeDeleteManifest: 2, TypeDeleteTag: 3,
		TypeLinkBlobs: 4, TypeMountBlob: 5, TypeUnlinkBlob: 6,
		TypeInitCluster: 7, TypeSetMember: 8, TypeRemoveMember: 9, TypeAddReplica: 10,
		TypeBootstrap: 11, TypeCreateUser: 12, TypeUpdateUser: 13, TypeDeleteUser: 14,
		TypeCreateToken: 15, TypeDeleteToken: 16, TypeTouchTokens: 17, TypeCreateOrg: 18,
		TypeDeleteOrg: 19, TypeCreateTeam: 20, TypeDeleteTeam: 21, TypeAddTeamMember: 22,
		TypeRemoveTeamMember: 23, TypeSetTeamPermission: 24, TypeCreateRepository: 25,
		TypeUpdateRepository: 26, TypeDeleteRepository: 27, TypeSetNamespace: 28,
		TypeAddSigningKey: 29, TypeSetSettings: 30, TypeAppendAudit: 31,
		TypeStar: 32, TypeUnstar: 33, TypeAddPulls: 34, TypeSetOfficial: 35,
		TypeCreateWebhook: 36, TypeUpdateWebhook: 37, TypeDeleteWebhook: 38,
		TypeRecordWebhookAttempt: 39, TypeSetWebhookCallback: 40, TypeRedeliverWebhook: 41,
		TypeSetBuildSettings: 42, TypeDeleteBuildSettings: 43, TypeQueueBuilds: 44,
		TypeClaimBuild: 45, TypeUpdateBuild: 46, TypeCancelBuild: 47,
	}
	for typ, n := range want {
		if uint16(typ) != n {
			t.Errorf("%v = %d, want %d", typ, uint16(typ), n)
		}
		if strings.HasPrefix(typ.String(), "Type(") {
			t.Errorf("type %d has no name", n)
		}
		if _, ok := newCommand[typ]; !ok {
			t.Errorf("%v is not decodable", typ)
		}
	}
	if len(newCommand) != len(want) {
		t.Errorf("%d decodable types, %d pinned here: pin the new one", len(newCommand), len(want))
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	m := imageManifest("alice/app", "v1", blobDesc("layer"))
	m.Subject = blobDesc("subject").Digest
	m.Annotations = map[string]string{"a": "b"}
	for _, c := range []Command{
		&PutManifest{Manifest: *m, Tags: []string{"1.0", "latest"}},
		&DeleteManifest{Repo: "alice/app", Digest: m.Digest},
		&DeleteTag{Repo: "alice/app", Tag: "1.0"},
		&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{blobDesc("a"), blobDesc("b")}, Node: "n1"},
		&MountBlob{Repo: "bob/app", From: "alice/app", Digest: m.Digest, Node: "n1"},
		&MountBlob{Repo: "bob/app", Digest: m.Digest},
		&UnlinkBlob{Repo: "alice/app", Digest: m.Digest},
		&InitCluster{Cluster: ClusterInfo{ID: "c1", TokenKey: make([]byte, TokenKeySize)}},
		&SetMember{Member: Member{ID: "n1", HTTP: "http://n1:5000", P2P: []string{"/ip4/127.0.0.1/tcp/1"}, Role: RoleNonvoter}},
		&RemoveMember{ID: "n1"},
		&AddReplica{Digest: m.Digest, Size: 12, Node: "n1"},
	} {
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("encode %v: %v", c.Type(), err)
		}
		if b[0] != envelopeVersion || Type(uint16(b[1])<<8|uint16(b[2])) != c.Type() {
			t.Fatalf("envelope header % x for %v", b[:3], c.Type())
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("decode %v: %v", c.Type(), err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip of %v:\n got %#v\nwant %#v", c.Type(), got, c)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	valid, _ := Encode(&DeleteTag{Repo: "a", Tag: "b"})
	for name, b := range map[string][]byte{
		"empty":                       nil,
		"header only":                 valid[:2],
		"version 0":                   append([]byte{0}, valid[1:]...),
		"version 2":                   append([]byte{2}, valid[1:]...),
		"type 0":                      append([]byte{envelopeVersion, 0, 0}, valid[3:]...),
		"type 999":                    append([]byte{envelopeVersion, 0x03, 0xe7}, valid[3:]...),
		"no payload":                  valid[:3],
		"trailing data":               append(append([]byte(nil), valid...), "x"...),
		"wrong JSON type":             append(append([]byte(nil), valid[:3]...), `{"repo":1}`...),
		"init cluster key not base64": []byte("\x01\x00\x07" + `{"cluster":{"id":"c","token_key":"%%"}}`),
		"set member p2p not a list":   []byte("\x01\x00\x08" + `{"member":{"id":"n","p2p":"x"}}`),
		"remove member id not string": []byte("\x01\x00\x09" + `{"id":7}`),
		"add replica size not number": []byte("\x01\x00\x0a" + `{"digest":"sha256:x","size":"big"}`),
	} {
		if _, err := Decode(b); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("%s: Decode error %v, want ErrInvalid", name, err)
		}
	}
}

// checkCommandsRoundTrip checks that every command of cmds validates and
// survives Encode and Decode unchanged, and that cmds covers, with a name,
// every type from first to last.
func checkCommandsRoundTrip(t *testing.T, cmds []Command, first, last Type) {
	t.Helper()
	seen := map[Type]bool{}
	for _, c := range cmds {
		if err := c.validate(); err != nil {
			t.Fatalf("%v: %v", c.Type(), err)
		}
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip of %v:\n got %#v\nwant %#v", c.Type(), got, c)
		}
		seen[c.Type()] = true
	}
	for typ := first; typ <= last; typ++ {
		if !seen[typ] || strings.HasPrefix(typ.String(), "Type(") {
			t.Errorf("%v is not covered or not named", typ)
		}
	}
}
