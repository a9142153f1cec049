package qmp

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    message
		wantErr bool
	}{
		{
			name: "greeting",
			line: `{"QMP": {"version": {"qemu": {"micro": 19, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18"}, "capabilities": ["oob"]}}`,
			want: message{kind: kindGreeting},
		},
		{
			name: "return with id",
			line: `{"return": {"status": "running", "running": true}, "id": 7}`,
			want: message{kind: kindReturn, id: 7, hasID: true, ret: json.RawMessage(`{"status": "running", "running": true}`)},
		},
		{
			name: "empty return",
			line: `{"return": {}, "id": 1}`,
			want: message{kind: kindReturn, id: 1, hasID: true, ret: json.RawMessage(`{}`)},
		},
		{
			name: "error with id",
			line: `{"id": 3, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}`,
			want: message{kind: kindError, id: 3, hasID: true, err: &Error{Class: "CommandNotFound", Desc: "The command nope has not been found"}},
		},
		{
			name: "error without id",
			line: `{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}`,
			want: message{kind: kindError, err: &Error{Class: "GenericError", Desc: "JSON parse error, expecting value"}},
		},
		{
			name: "event",
			line: `{"timestamp": {"seconds": 1700000000, "microseconds": 250}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}`,
			want: message{kind: kindEvent, event: Event{
				Name: "SHUTDOWN",
				Data: json.RawMessage(`{"guest": false, "reason": "host-qmp-quit"}`),
				Time: time.Unix(1700000000, 250000),
			}},
		},
		{name: "not json", line: `{"return": `, wantErr: true},
		{name: "unknown shape", line: `{"hello": 1}`, wantErr: true},
		{name: "foreign id", line: `{"return": {}, "id": "abc"}`, wantErr: true},
		{name: "negative id", line: `{"return": {}, "id": -1}`, wantErr: true},
		{name: "array", line: `[1,2]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decode([]byte(tt.line))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("decode(%s) = %+v, want an error", tt.line, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode(%s): %v", tt.line, err)
			}
			if got.kind != tt.want.kind || got.id != tt.want.id || got.hasID != tt.want.hasID ||
				!bytes.Equal(got.ret, tt.want.ret) || !errorsEqual(got.err, tt.want.err) ||
				got.event.Name != tt.want.event.Name || !bytes.Equal(got.event.Data, tt.want.event.Data) ||
				!got.event.Time.Equal(tt.want.event.Time) {
				t.Errorf("decode(%s) = %+v, want %+v", tt.line, got, tt.want)
			}
		})
	}
}

func errorsEqual(a, b *Error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"QMP": {"version": {}, "capabilities": []}}`,
		`{"return": {}, "id": 1}`,
		`{"error": {"class": "GenericError", "desc": "x"}, "id": 2}`,
		`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}`,
		`{"return": [1,2,3]}`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := decode(line)
		if err != nil {
			return
		}
		switch m.kind {
		case kindGreeting, kindReturn:
		case kindError:
			if m.err == nil {
				t.Fatalf("error message without error: %+v", m)
			}
		case kindEvent:
			if m.event.Name == "" {
				t.Fatalf("event without name: %+v", m)
			}
		default:
			t.Fatalf("decode returned kind %d without error", m.kind)
		}
		if m.kind == kindReturn && len(m.ret) == 0 {
			t.Fatalf("return without value: %+v", m)
		}
	})
}
