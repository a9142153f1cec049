package store

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeBatch(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Batch
		wantErr bool
	}{
		{"put and delete", `{"epoch":2,"seq":3,"prev":"","ops":[{"bucket":"b","key":"k","value":"dg=="},{"bucket":"b","key":"d","value":null}]}`,
			Batch{Epoch: 2, Seq: 3, Ops: []Op{{"b", "k", []byte("v")}, {"b", "d", nil}}}, false},
		{"empty value is not a delete", `{"epoch":0,"seq":1,"ops":[{"bucket":"b","key":"k","value":""}]}`,
			Batch{Seq: 1, Ops: []Op{{"b", "k", []byte{}}}}, false},
		{"epoch change only", `{"epoch":4,"seq":9,"prev":"` + strings.Repeat("ab", 32) + `"}`,
			Batch{Epoch: 4, Seq: 9, Prev: strings.Repeat("ab", 32)}, false},
		{"seq 0", `{"epoch":1,"seq":0}`, Batch{}, true},
		{"trailing data", `{"epoch":1,"seq":1} {}`, Batch{}, true},
		{"unknown field", `{"epoch":1,"seq":1,"x":1}`, Batch{}, true},
		{"bad digest", `{"epoch":1,"seq":1,"prev":"AB"}`, Batch{}, true},
		{"upper-case digest", `{"epoch":1,"seq":1,"prev":"` + strings.Repeat("AB", 32) + `"}`, Batch{}, true},
		{"empty key", `{"epoch":1,"seq":1,"ops":[{"bucket":"b","key":"","value":null}]}`, Batch{}, true},
		{"reserved bucket", `{"epoch":1,"seq":1,"ops":[{"bucket":"_meta","key":"k","value":null}]}`, Batch{}, true},
		{"negative seq", `{"epoch":1,"seq":-1}`, Batch{}, true},
		{"null", `null`, Batch{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeBatch([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %t", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, errInvalid) {
				t.Fatalf("error %v does not wrap errInvalid", err)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"epoch":2,"seq":3,"prev":"","ops":[{"bucket":"b","key":"k","value":"dg=="},{"bucket":"b","key":"d","value":null}]}`))
	f.Add([]byte(`{"epoch":1,"seq":1,"ops":[{"bucket":"b","key":"k","value":""}]}`))
	f.Add([]byte(`{"epoch":1,"seq":1,"prev":"` + strings.Repeat("0f", 32) + `"}`))
	f.Add([]byte(`{"seq":1,"ops":[{"bucket":"\u00e9","key":"\ud800","value":null}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decodeBatch(data)
		if err != nil {
			if !errors.Is(err, errInvalid) {
				t.Fatalf("error %v does not wrap errInvalid", err)
			}
			return
		}
		// What is accepted survives the trip the primary makes: encode, decode.
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeBatch(enc)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", enc, err)
		}
		if !reflect.DeepEqual(b, again) || b.next() != again.next() {
			t.Fatalf("round trip changed the batch: %#v -> %#v", b, again)
		}
	})
}
