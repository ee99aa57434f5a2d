package finetune

//go:generate go run ../internal/enumgen -o enums.go

import (
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// EnumName is the name of an enum value without its enum's prefix, as the
// Python and TypeScript SDKs name it: EnumName(JobStateSucceeded) is
// "SUCCEEDED" (x.String() is the full "JOB_STATE_SUCCEEDED"). A value this
// SDK's protos do not know is its number, as in String().
func EnumName(x protoreflect.Enum) string {
	values := x.Descriptor().Values()
	value := values.ByNumber(x.Number())
	if value == nil {
		return strconv.Itoa(int(x.Number()))
	}
	name := string(value.Name())
	// Every value carries the enum's prefix, which the zero value shows: JOB_STATE_UNSPECIFIED.
	if zero := values.ByNumber(0); zero != nil {
		if prefix, ok := strings.CutSuffix(string(zero.Name()), "UNSPECIFIED"); ok {
			return strings.TrimPrefix(name, prefix)
		}
	}
	return name
}
