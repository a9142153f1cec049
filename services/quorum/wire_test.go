package quorum

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

var (
	testKey  = bytes.Repeat([]byte{1}, 32)
	otherKey = bytes.Repeat([]byte{2}, 32)
)

const testNonce = "00112233445566778899aabbccddeeff"

func signJSON(t testing.TB, key []byte, v any) []byte {
	t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return frame(key, body)
}

func goodRequest() Request {
	return Request{Unit: "u1", Node: 1, Boot: "boot-a", Seq: 7, Nonce: testNonce, Op: OpAcquire, TTLms: 4000}
}

func goodReply() Reply {
	return Reply{Unit: "u1", Node: 2, Nonce: testNonce, Holder: 1, RemainingMs: 1500}
}

func TestUnmarshalRequest(t *testing.T) {
	with := func(f func(*Request)) []byte {
		r := goodRequest()
		f(&r)
		return signJSON(t, testKey, r)
	}
	good, err := MarshalRequest(testKey, goodRequest())
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name    string
		p       []byte
		key     []byte
		wantErr string
	}{
		{"acquire", good, testKey, ""},
		{"release", with(func(r *Request) { r.Op, r.TTLms = OpRelease, 0 }), testKey, ""},
		{"query", with(func(r *Request) { r.Op, r.TTLms = OpQuery, 0 }), testKey, ""},
		{"max ttl", with(func(r *Request) { r.TTLms = MaxTTL.Milliseconds() }), testKey, ""},
		{"bad MAC", flipped, testKey, "not authenticated"},
		{"other unit's key", good, otherKey, "not authenticated"},
		{"node 0", with(func(r *Request) { r.Node = 0 }), testKey, "node 0"},
		{"node 3", with(func(r *Request) { r.Node = 3 }), testKey, "node 3"},
		{"empty unit", with(func(r *Request) { r.Unit = "" }), testKey, "unit of 0 bytes"},
		{"long unit", with(func(r *Request) { r.Unit = strings.Repeat("u", 65) }), testKey, "unit of 65 bytes"},
		{"unit with a space", with(func(r *Request) { r.Unit = "u 1" }), testKey, "printable ASCII"},
		{"empty boot", with(func(r *Request) { r.Boot = "" }), testKey, "boot of 0 bytes"},
		{"short nonce", with(func(r *Request) { r.Nonce = "0011" }), testKey, "nonce"},
		{"nonce not hex", with(func(r *Request) { r.Nonce = strings.Repeat("zz", 16) }), testKey, "nonce"},
		{"unknown op", with(func(r *Request) { r.Op = "steal" }), testKey, "unknown operation"},
		{"acquire without ttl", with(func(r *Request) { r.TTLms = 0 }), testKey, "lease of 0 ms"},
		{"negative ttl", with(func(r *Request) { r.TTLms = -1 }), testKey, "lease of -1 ms"},
		{"ttl over MaxTTL", with(func(r *Request) { r.TTLms = MaxTTL.Milliseconds() + 1 }), testKey, "lease of 30001 ms"},
		{"query with ttl", with(func(r *Request) { r.Op = OpQuery }), testKey, "query with a TTL"},
		{"reply as request", signJSON(t, testKey, goodReply()), testKey, "unknown field"},
		{"unknown field", frame(testKey, []byte(`{"unit":"u1","node":1,"boot":"b","seq":1,"nonce":"`+testNonce+`","op":"query","x":1}`)), testKey, "unknown field"},
		{"trailing data", frame(testKey, append(bytes.Clone(good[len(magic):len(good)-macSize]), " {}"...)), testKey, "after the JSON"},
		{"not JSON", frame(testKey, []byte("hello, quorum")), testKey, "body"},
		{"oversize", frame(testKey, append([]byte(`{"unit":"u1"}`), bytes.Repeat([]byte(" "), maxDatagram)...)), testKey, "not a Dyad quorum datagram"},
		{"other magic", append([]byte("DYHB1"), good[len(magic):]...), testKey, "not a Dyad quorum datagram"},
		{"truncated", good[:len(magic)+macSize], testKey, "not a Dyad quorum datagram"},
		{"empty", nil, testKey, "not a Dyad quorum datagram"},
		{"garbage", bytes.Repeat([]byte{0xff}, 100), testKey, "not a Dyad quorum datagram"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := UnmarshalRequest(tt.key, tt.p)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if r.Unit != "u1" || r.Node != 1 || r.Nonce != testNonce || r.Seq != 7 {
					t.Errorf("decoded %+v", r)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if _, err := UnmarshalRequest(otherKey, good); !errors.Is(err, errAuth) {
		t.Errorf("wrong key: %v is not errAuth", err)
	}
}

func TestUnmarshalReply(t *testing.T) {
	with := func(f func(*Reply)) []byte {
		r := goodReply()
		f(&r)
		return signJSON(t, testKey, r)
	}
	good, err := MarshalReply(testKey, goodReply())
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(magic)] ^= 1
	tests := []struct {
		name    string
		p       []byte
		key     []byte
		wantErr string
	}{
		{"refused", good, testKey, ""},
		{"granted", with(func(r *Reply) { r.Granted, r.Holder = true, 2 }), testKey, ""},
		{"none", with(func(r *Reply) { r.Holder, r.RemainingMs = 0, 0 }), testKey, ""},
		{"starting", with(func(r *Reply) { r.Holder, r.RemainingMs, r.Error = 0, 0, errStarting }), testKey, ""},
		{"bad MAC", flipped, testKey, "not authenticated"},
		{"other unit's key", good, otherKey, "not authenticated"},
		{"bad node", with(func(r *Reply) { r.Node = 7 }), testKey, "node 7"},
		{"bad holder", with(func(r *Reply) { r.Holder = 3 }), testKey, "holder 3"},
		{"granted to the other", with(func(r *Reply) { r.Granted = true }), testKey, "granted to node 2 but held by 1"},
		{"remaining without holder", with(func(r *Reply) { r.Holder = 0 }), testKey, "without a holder"},
		{"remaining over MaxTTL", with(func(r *Reply) { r.RemainingMs = 30001 }), testKey, "30001 ms"},
		{"negative remaining", with(func(r *Reply) { r.RemainingMs = -1 }), testKey, "-1 ms"},
		{"long error", with(func(r *Reply) { r.Error = strings.Repeat("e", 257) }), testKey, "error text of 257"},
		{"request as reply", signJSON(t, testKey, goodRequest()), testKey, "unknown field"},
		{"garbage", []byte("DYQ1" + strings.Repeat("x", 40)), testKey, "not authenticated"},
		{"oversize", make([]byte, maxDatagram+1), testKey, "not a Dyad quorum datagram"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := UnmarshalReply(tt.key, tt.p)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestMarshalRefusesInvalid(t *testing.T) {
	req := goodRequest()
	req.Node = 0
	if _, err := MarshalRequest(testKey, req); err == nil {
		t.Error("request of node 0 encoded")
	}
	rep := goodReply()
	rep.Granted = true
	if _, err := MarshalReply(testKey, rep); err == nil {
		t.Error("reply granting to a node that does not hold the lease encoded")
	}
}

func TestRequestUnit(t *testing.T) {
	good, _ := MarshalRequest(testKey, goodRequest())
	tests := []struct {
		name string
		p    []byte
		want string // "" for an error
	}{
		{"request", good, "u1"},
		{"unsigned body is read too", frame(otherKey, []byte(`{"unit":"u2"}`)), "u2"},
		{"no unit", frame(testKey, []byte(`{"node":1}`)), ""},
		{"bad unit", frame(testKey, []byte(`{"unit":"a b"}`)), ""},
		{"not JSON", frame(testKey, []byte(`{"unit":`)), ""},
		{"garbage", []byte("nonsense"), ""},
	}
	for _, tt := range tests {
		got, err := requestUnit(tt.p)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("%s: requestUnit = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

// fuzzSeeds are datagrams and bodies of both kinds.
func fuzzSeeds(f *testing.F) {
	req, _ := MarshalRequest(testKey, goodRequest())
	rep, _ := MarshalReply(testKey, goodReply())
	for _, p := range [][]byte{req, rep, req[len(magic) : len(req)-macSize], rep[len(magic) : len(rep)-macSize],
		nil, []byte("DYQ1"), []byte(`{"unit":"u1","node":1}`), []byte("null")} {
		f.Add(p)
	}
}

// FuzzUnmarshalRequest feeds the fuzzer's bytes both as a datagram and as
// the body of a correctly signed one, so that it reaches the JSON and the
// validation behind the MAC.
func FuzzUnmarshalRequest(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range [][]byte{b, frame(testKey, b)} {
			requestUnit(p)
			r, err := UnmarshalRequest(testKey, p)
			if err != nil {
				continue
			}
			if err := r.validate(); err != nil {
				t.Fatalf("accepted an invalid request %+v: %v", r, err)
			}
			if unit, err := requestUnit(p); err != nil || unit != r.Unit {
				t.Fatalf("requestUnit = %q, %v; the request is of %q", unit, err, r.Unit)
			}
			again, err := MarshalRequest(testKey, r)
			if err != nil {
				t.Fatalf("accepted request does not encode: %v", err)
			}
			if r2, err := UnmarshalRequest(testKey, again); err != nil || r2 != r {
				t.Fatalf("round trip: %+v, %v; want %+v", r2, err, r)
			}
		}
	})
}

func FuzzUnmarshalReply(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range [][]byte{b, frame(testKey, b)} {
			r, err := UnmarshalReply(testKey, p)
			if err != nil {
				continue
			}
			if err := r.validate(); err != nil {
				t.Fatalf("accepted an invalid reply %+v: %v", r, err)
			}
			again, err := MarshalReply(testKey, r)
			if err != nil {
				t.Fatalf("accepted reply does not encode: %v", err)
			}
			if r2, err := UnmarshalReply(testKey, again); err != nil || r2 != r {
				t.Fatalf("round trip: %+v, %v; want %+v", r2, err, r)
			}
		}
	})
}
