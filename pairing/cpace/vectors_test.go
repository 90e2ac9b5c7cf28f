package cpace

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/gtank/ristretto255"
)

// Test vectors from draft-irtf-cfrg-cpace-21, Appendix A (string utilities)
// and Appendix B.3 ("Test vector for CPace using group ristretto255 and hash
// SHA-512"), as published in the draft text (repository
// cfrg/draft-irtf-cfrg-cpace, tag draft-irtf-cfrg-cpace-21,
// draft-irtf-cfrg-cpace.md). A second, older vector set from
// draft-irtf-cfrg-cpace-13 Appendix B.3 (same algorithm, different CI) is
// checked too.

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.Join(strings.Fields(s), "")
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in test vector: %v", err)
	}
	return b
}

func scalarFromHex(t testing.TB, s string) *ristretto255.Scalar {
	t.Helper()
	y := ristretto255.NewScalar()
	if err := y.Decode(unhex(t, s)); err != nil {
		t.Fatalf("test vector scalar not canonical: %v", err)
	}
	return y
}

func TestPrependLenVectors(t *testing.T) {
	r127 := make([]byte, 127)
	r128 := make([]byte, 128)
	for i := range r128 {
		r128[i] = byte(i)
		if i < 127 {
			r127[i] = byte(i)
		}
	}
	cases := []struct {
		in   []byte
		want string
	}{
		{[]byte(""), "00"},
		{[]byte("1234"), "0431323334"},
		{r127, `7f000102030405060708090a0b0c0d0e0f101112131415161718191a1b
			1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738
			393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455
			565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f707172
			737475767778797a7b7c7d7e`},
		{r128, `8001000102030405060708090a0b0c0d0e0f101112131415161718191a
			1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637
			38393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f5051525354
			55565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f7071
			72737475767778797a7b7c7d7e7f`},
	}
	for _, c := range cases {
		got := appendPrependLen(nil, c.in)
		if want := unhex(t, c.want); !bytes.Equal(got, want) {
			t.Errorf("prepend_len(len %d) = %x, want %x", len(c.in), got, want)
		}
		if prependedLen(c.in) != len(got) {
			t.Errorf("prependedLen(len %d) = %d, want %d", len(c.in), prependedLen(c.in), len(got))
		}
	}
}

func TestLEB128Lengths(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 255, 16383, 16384, 1 << 21, 1<<21 + 5} {
		enc := appendPrependLen(nil, make([]byte, n))
		// Decode the LEB128 prefix independently.
		var v, shift uint64
		i := 0
		for {
			b := enc[i]
			v |= uint64(b&0x7f) << shift
			shift += 7
			i++
			if b&0x80 == 0 {
				break
			}
		}
		if v != uint64(n) || len(enc)-i != n || prependedLen(make([]byte, n)) != len(enc) {
			t.Errorf("length %d: decoded %d, prefix %d bytes, total %d", n, v, i, len(enc))
		}
	}
}

func TestLvCatVector(t *testing.T) {
	got := lvCat([]byte("1234"), []byte("5"), []byte(""), []byte("678"))
	if want := unhex(t, "043132333401350003363738"); !bytes.Equal(got, want) {
		t.Errorf("lv_cat = %x, want %x", got, want)
	}
}

func TestTranscriptIRVectors(t *testing.T) {
	got := transcriptIR([]byte("123"), []byte("PartyA"), []byte("234"), []byte("PartyB"))
	if want := unhex(t, "03313233065061727479410332333406506172747942"); !bytes.Equal(got, want) {
		t.Errorf("transcript_ir #1 = %x, want %x", got, want)
	}
	got = transcriptIR([]byte("3456"), []byte("PartyA"), []byte("2345"), []byte("PartyB"))
	if want := unhex(t, "043334353606506172747941043233343506506172747942"); !bytes.Equal(got, want) {
		t.Errorf("transcript_ir #2 = %x, want %x", got, want)
	}
}

// The symmetric ("parallel") setting is not exposed by the package; o_cat and
// transcript_oc are written here only to check the draft's ISK_SY vector
// against the package's ISK derivation.

func lexicographicallyLarger(a, b []byte) bool {
	return bytes.Compare(a, b) > 0
}

func oCat(a, b []byte) []byte {
	if lexicographicallyLarger(a, b) {
		return append(append([]byte("oc"), a...), b...)
	}
	return append(append([]byte("oc"), b...), a...)
}

func transcriptOC(ya, ada, yb, adb []byte) []byte {
	return oCat(lvCat(ya, ada), lvCat(yb, adb))
}

func TestOCatVectors(t *testing.T) {
	order := []struct {
		a, b string
		want bool
	}{
		{"\x00", "\x00\x00", false},
		{"\x01", "\x00\x00", true},
		{"\x00\x00", "\x00", true},
		{"\x00\x00", "\x01", false},
		{"\x00\x01", "\x01", false},
		{"ABCD", "BCD", false},
	}
	for _, c := range order {
		if got := lexicographicallyLarger([]byte(c.a), []byte(c.b)); got != c.want {
			t.Errorf("lexicographically_larger(%q, %q) = %v", c.a, c.b, got)
		}
	}
	if got, want := oCat([]byte("ABCD"), []byte("BCD")), unhex(t, "6f6342434441424344"); !bytes.Equal(got, want) {
		t.Errorf("o_cat #1 = %x, want %x", got, want)
	}
	if got, want := oCat([]byte("BCD"), []byte("ABCDE")), unhex(t, "6f634243444142434445"); !bytes.Equal(got, want) {
		t.Errorf("o_cat #2 = %x, want %x", got, want)
	}
	if got, want := transcriptOC([]byte("123"), []byte("PartyA"), []byte("234"), []byte("PartyB")),
		unhex(t, "6f6303323334065061727479420331323306506172747941"); !bytes.Equal(got, want) {
		t.Errorf("transcript_oc #1 = %x, want %x", got, want)
	}
	if got, want := transcriptOC([]byte("3456"), []byte("PartyA"), []byte("2345"), []byte("PartyB")),
		unhex(t, "6f63043334353606506172747941043233343506506172747942"); !bytes.Equal(got, want) {
		t.Errorf("transcript_oc #2 = %x, want %x", got, want)
	}
}

type ristrettoVector struct {
	name       string
	prs, ci    string
	sid        string
	genString  string // empty: not checked
	genHash    string // empty: not checked
	g          string
	ya, ADa    string
	Ya         string
	yb, ADb    string
	Yb         string
	K          string
	trIR       string
	iskInputIR string // empty: not checked
	iskIR      string
	iskSY      string
	sidOutIR   string // empty: not checked
	sidOutOC   string
}

var ristrettoVectors = []ristrettoVector{
	{
		name: "draft-21 B.3",
		prs:  "50617373776f7264", // b'Password'
		ci:   "0b415f696e69746961746f720b425f726573706f6e646572",
		sid:  "7e4b4791d6a8ef019b936c79fb7f2c57",
		genString: `11435061636552697374726574746f3235350850617373776f726464
			00000000000000000000000000000000000000000000000000000000
			00000000000000000000000000000000000000000000000000000000
			00000000000000000000000000000000000000000000000000000000
			00000000000000000000000000000000180b415f696e69746961746f
			720b425f726573706f6e646572107e4b4791d6a8ef019b936c79fb7f
			2c57`,
		genHash: `da6d3ddc8802fca9058755ffd3ebde08a9c2c74945901a258482a288
			b6663af06bf645c93cd1c51512307199c80e84908916d983b34af772
			05f90851a657ee27`,
		g: `222b6b195fe84b1652badb6f6a3ae3d24341e7306967f0b8115b40d5
			698c7e56`,
		ya: `da3d23700a9e5699258aef94dc060dfda5ebb61f02a5ea77fad53f4f
			f0976d08`,
		ADa: "414461",
		Ya: `d6bac480f2c386c394efc7c47adb9925dcd2630b64f240c50f8d0eec
			482b9157`,
		yb: `d2316b454718c35362d83d69df6320f38578ed5984651435e2949762
			d900b80d`,
		ADb: "414462",
		Yb: `3ea7e0b19560d7c0b0f5734f63b955286dfa8232b5ebe63324e2d9e7
			433f7258`,
		K: `80b69a8a76457ab6a4d7f887a4bf6b55a2f80ac19c333f917a05fc98
			87c8b40f`,
		trIR: `20d6bac480f2c386c394efc7c47adb9925dcd2630b64f240c50f8d0e
			ec482b915703414461203ea7e0b19560d7c0b0f5734f63b955286dfa
			8232b5ebe63324e2d9e7433f725803414462`,
		iskInputIR: `15435061636552697374726574746f3235355f49534b107e4b4791d6
			a8ef019b936c79fb7f2c572080b69a8a76457ab6a4d7f887a4bf6b55
			a2f80ac19c333f917a05fc9887c8b40f20d6bac480f2c386c394efc7
			c47adb9925dcd2630b64f240c50f8d0eec482b915703414461203ea7
			e0b19560d7c0b0f5734f63b955286dfa8232b5ebe63324e2d9e7433f
			725803414462`,
		iskIR: `b69effbf61b51d56401c0f65601abe428de8206feaaf0e32198896dc
			ae7b35cd2b38950a39dfd5d4a79164614c2984f7daa460b588c1e80c
			3fa2068af7900447`,
		iskSY: `544199d71f62f8d9a1fee55727e24fe4a45844593c2b6013c4fa3969
			d0e5debb2244675c0b43397cbb68d342b01fc0f98fc961469a25134d
			e9f0f813c1a57476`,
		sidOutIR: `bb1c449b35f0ea79a65c209f329a693d475e0ce2387bed9fe4b78f60
			b2a27c219813fb2cfe175ef40d2222d9261e66da7d78f7c55a303b1b
			8611dcdfab880c47`,
		sidOutOC: `10d5941d4933497fe31b9188d690b84465e2a2d158332a7267284a07
			1a8d0876fc5c8c329dc735d59a9f8ef6623ee23924704a2f929dd631
			ca981227ee82fff2`,
	},
	{
		// draft-irtf-cfrg-cpace-13 Appendix B.3: same construction, with
		// CI = b'oc\x0bB_responder\x0bA_initiator'. Its session-id output
		// vectors used a different label ("CPaceSidOut") and are skipped.
		name: "draft-13 B.3",
		prs:  "50617373776f7264",
		ci:   "6f630b425f726573706f6e6465720b415f696e69746961746f72",
		sid:  "7e4b4791d6a8ef019b936c79fb7f2c57",
		genString: `11435061636552697374726574746f3235350850617373776f726464
			00000000000000000000000000000000000000000000000000000000
			00000000000000000000000000000000000000000000000000000000
			00000000000000000000000000000000000000000000000000000000
			000000000000000000000000000000001a6f630b425f726573706f6e
			6465720b415f696e69746961746f72107e4b4791d6a8ef019b936c79
			fb7f2c57`,
		genHash: `c63a5750e2439c17ccd8213be14fde2f87e1bc637001a97f5929c77b
			30ea0e08afbc75ace5d3d73b2842a79d01488c5fd7ea30d475ee6095
			45af1bfd1ff77c8e`,
		g: `a6fc82c3b8968fbb2e06fee81ca858586dea50d248f0c7ca6a18b090
			2a30b36b`,
		ya: `da3d23700a9e5699258aef94dc060dfda5ebb61f02a5ea77fad53f4f
			f0976d08`,
		ADa: "414461",
		Ya: `d40fb265a7abeaee7939d91a585fe59f7053f982c296ec413c624c66
			9308f87a`,
		yb: `d2316b454718c35362d83d69df6320f38578ed5984651435e2949762
			d900b80d`,
		ADb: "414462",
		Yb: `08bcf6e9777a9c313a3db6daa510f2d398403319c2341bd506a92e67
			2eb7e307`,
		K: `e22b1ef7788f661478f3cddd4c600774fc0f41e6b711569190ff88fa
			0e607e09`,
		trIR: `20d40fb265a7abeaee7939d91a585fe59f7053f982c296ec413c624c
			669308f87a034144612008bcf6e9777a9c313a3db6daa510f2d39840
			3319c2341bd506a92e672eb7e30703414462`,
		iskInputIR: `15435061636552697374726574746f3235355f49534b107e4b4791d6
			a8ef019b936c79fb7f2c5720e22b1ef7788f661478f3cddd4c600774
			fc0f41e6b711569190ff88fa0e607e0920d40fb265a7abeaee7939d9
			1a585fe59f7053f982c296ec413c624c669308f87a034144612008bc
			f6e9777a9c313a3db6daa510f2d398403319c2341bd506a92e672eb7
			e30703414462`,
		iskIR: `4c5469a16b2364c4b944ebc1a79e51d1674ad47db26e8718154f59fa
			ebfaa52d8346f30aa58377117eb20d527f2cbc5c76381f7fd372e89d
			f8239f87f2e02ed1`,
		iskSY: `980dcc5a1c52ceea031e75f38ed266586616488c5c5780285fcbcf79
			087c7bcdbd993502eee606b718ba31e840a000a7b7befe15ea427c5c
			fe88344fa1237f35`,
	},
}

func TestRistretto255Vectors(t *testing.T) {
	for _, v := range ristrettoVectors {
		t.Run(v.name, func(t *testing.T) {
			prs, ci, sid := unhex(t, v.prs), unhex(t, v.ci), unhex(t, v.sid)
			ada, adb := unhex(t, v.ADa), unhex(t, v.ADb)
			wantYa, wantYb, wantK := unhex(t, v.Ya), unhex(t, v.Yb), unhex(t, v.K)

			// Generator.
			gs := generatorString([]byte(dsi), prs, ci, sid, hashBlockSize)
			if want := unhex(t, v.genString); !bytes.Equal(gs, want) {
				t.Fatalf("generator_string = %x, want %x", gs, want)
			}
			if h := sha512.Sum512(gs); !bytes.Equal(h[:], unhex(t, v.genHash)) {
				t.Fatalf("generator hash = %x", h)
			}
			g := calculateGenerator(prs, ci, sid)
			if got := g.Encode(nil); !bytes.Equal(got, unhex(t, v.g)) {
				t.Fatalf("encoded generator = %x, want %s", got, v.g)
			}

			// Messages.
			if got := scalarMult(scalarFromHex(t, v.ya), g); !bytes.Equal(got, wantYa) {
				t.Errorf("Ya = %x, want %x", got, wantYa)
			}
			if got := scalarMult(scalarFromHex(t, v.yb), g); !bytes.Equal(got, wantYb) {
				t.Errorf("Yb = %x, want %x", got, wantYb)
			}

			// Secret point K, both ways.
			for _, c := range []struct{ y, X string }{{v.ya, v.Yb}, {v.yb, v.Ya}} {
				k, err := scalarMultVfy(scalarFromHex(t, c.y), unhex(t, c.X))
				if err != nil || !bytes.Equal(k, wantK) {
					t.Errorf("scalar_mult_vfy = %x, %v; want %x", k, err, wantK)
				}
			}

			// Initiator-responder ISK.
			tr := transcriptIR(wantYa, ada, wantYb, adb)
			if want := unhex(t, v.trIR); !bytes.Equal(tr, want) {
				t.Errorf("transcript_ir = %x, want %x", tr, want)
			}
			if v.iskInputIR != "" {
				in := append(lvCat([]byte(dsi+"_ISK"), sid, wantK), tr...)
				if want := unhex(t, v.iskInputIR); !bytes.Equal(in, want) {
					t.Errorf("ISK hash input = %x, want %x", in, want)
				}
			}
			wantISK := unhex(t, v.iskIR)
			if got := computeISK(sid, wantK, tr); !bytes.Equal(got, wantISK) {
				t.Errorf("ISK_IR = %x, want %x", got, wantISK)
			}

			// Symmetric-mode ISK (transcript_oc) with the same derivation.
			if got := computeISK(sid, wantK, transcriptOC(wantYa, ada, wantYb, adb)); !bytes.Equal(got, unhex(t, v.iskSY)) {
				t.Errorf("ISK_SY = %x, want %s", got, v.iskSY)
			}

			// Optional session id output (Section 10.6, label of draft-21).
			if v.sidOutIR != "" {
				h := sha512.Sum512(append([]byte("CPaceSidOutput"), tr...))
				if !bytes.Equal(h[:], unhex(t, v.sidOutIR)) {
					t.Errorf("sid_output (ir) = %x", h)
				}
				h = sha512.Sum512(append([]byte("CPaceSidOutput"), transcriptOC(wantYa, ada, wantYb, adb)...))
				if !bytes.Equal(h[:], unhex(t, v.sidOutOC)) {
					t.Errorf("sid_output (oc) = %x", h)
				}
			}

			// The full protocol through the API-level functions, with the
			// vectors' scalars plugged in.
			ini, ya := start(prs, ci, sid, ada, scalarFromHex(t, v.ya))
			if !bytes.Equal(ya, wantYa) {
				t.Fatalf("start: Ya = %x, want %x", ya, wantYa)
			}
			yb, iskB, err := respond(prs, ci, sid, adb, ya, ada, scalarFromHex(t, v.yb))
			if err != nil {
				t.Fatalf("respond: %v", err)
			}
			if !bytes.Equal(yb, wantYb) || !bytes.Equal(iskB, wantISK) {
				t.Fatalf("respond: Yb = %x, ISK = %x", yb, iskB)
			}
			iskA, err := ini.Finish(yb, adb)
			if err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if !bytes.Equal(iskA, wantISK) {
				t.Fatalf("Finish: ISK = %x, want %x", iskA, wantISK)
			}
		})
	}
}

// Appendix B.3.10: scalar_mult with valid inputs.
func TestScalarMultValidVector(t *testing.T) {
	s := scalarFromHex(t, "7cd0e075fa7955ba52c02759a6c90dbbfc10e6d40aea8d283e407d88cf538a05")
	x := unhex(t, "2c3c6b8c4f3800e7aef6864025b4ed79bd599117e427c41bd47d93d654b4a51c")
	want := unhex(t, "7c13645fe790a468f62c39beb7388e541d8405d1ade69d1778c5fe3e7f6b600e")

	p := ristretto255.NewElement()
	if err := p.Decode(x); err != nil {
		t.Fatalf("decode X: %v", err)
	}
	if got := scalarMult(s, p); !bytes.Equal(got, want) {
		t.Errorf("scalar_mult = %x, want %x", got, want)
	}
	got, err := scalarMultVfy(s, x)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("scalar_mult_vfy = %x, %v; want %x", got, err, want)
	}
}

// Appendix B.3.11: invalid inputs for scalar_mult_vfy must give G.I, and the
// protocol must abort when they appear in a message of A or B.
func TestScalarMultVfyInvalidVectors(t *testing.T) {
	s := "7cd0e075fa7955ba52c02759a6c90dbbfc10e6d40aea8d283e407d88cf538a05"
	cases := []struct {
		name string
		y    string
		want error
	}{
		{"Y_i1", "2b3c6b8c4f3800e7aef6864025b4ed79bd599117e427c41bd47d93d654b4a51c", ErrInvalidElement},
		{"Y_i2 (G.I)", "0000000000000000000000000000000000000000000000000000000000000000", ErrIdentityElement},
	}
	prs, ci, sid := []byte("Password"), []byte("ci"), []byte("sid")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			y := unhex(t, c.y)
			k, err := scalarMultVfy(scalarFromHex(t, s), y)
			if !errors.Is(err, c.want) {
				t.Errorf("scalar_mult_vfy error = %v, want %v", err, c.want)
			}
			if !bytes.Equal(k, identityEncoding) {
				t.Errorf("scalar_mult_vfy = %x, want G.I", k)
			}

			// In A's message: the responder aborts.
			yb, isk, err := Respond(prs, ci, sid, nil, y, nil)
			if !errors.Is(err, c.want) || yb != nil || isk != nil {
				t.Errorf("Respond = %x, %x, %v; want abort with %v", yb, isk, err, c.want)
			}
			// In B's message: the initiator aborts.
			ini, _, err := Start(prs, ci, sid, nil)
			if err != nil {
				t.Fatal(err)
			}
			isk, err = ini.Finish(y, nil)
			if !errors.Is(err, c.want) || isk != nil {
				t.Errorf("Finish = %x, %v; want abort with %v", isk, err, c.want)
			}
		})
	}
}
