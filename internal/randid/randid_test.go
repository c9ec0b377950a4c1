package randid

import "testing"

func TestNew(t *testing.T) {
	a, b := New(), New()
	if len(a) != 16 || a == b {
		t.Fatalf("New() = %q, %q: want two different 16-character ids", a, b)
	}
}
