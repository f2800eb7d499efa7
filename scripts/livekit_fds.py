"""Writes the protobuf schema liblivekit_ffi.so was built with, as a FileDescriptorSet.

The wheel's `livekit/rtc/_proto/*_pb2.py` each embed their serialized FileDescriptorProto in an
`AddSerializedFile(b'...')` call. The bytes are read with `ast` (nothing from the wheel is imported
or executed) and written unchanged, dependencies first, so the output is byte-identical across runs.

    python livekit_fds.py <livekit wheel> <out.fds>
"""

import ast
import sys
import zipfile

from google.protobuf import descriptor_pb2


def serialized_files(wheel):
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            if not (name.startswith("livekit/rtc/_proto/") and name.endswith("_pb2.py")):
                continue
            tree = ast.parse(zf.read(name).decode("utf-8"), filename=name)
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "AddSerializedFile"
                ):
                    yield ast.literal_eval(node.args[0])


def main(wheel, out):
    raw = {}
    for data in serialized_files(wheel):
        fd = descriptor_pb2.FileDescriptorProto.FromString(data)
        raw[fd.name] = (data, list(fd.dependency))
    if not raw or "ffi.proto" not in raw:
        sys.exit(f"no ffi.proto descriptor found in {wheel}")
    ordered, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        if name not in raw:
            sys.exit(f"{name} is imported but not shipped in {wheel}")
        for dep in raw[name][1]:
            visit(dep)
        ordered.append(name)

    for name in sorted(raw):
        visit(name)
    fds = descriptor_pb2.FileDescriptorSet()
    for name in ordered:
        fds.file.add().ParseFromString(raw[name][0])
    # Field 1 of FileDescriptorSet, written by hand so the embedded bytes are kept verbatim.
    blob = b"".join(_field1(raw[name][0]) for name in ordered)
    assert descriptor_pb2.FileDescriptorSet.FromString(blob) == fds
    with open(out, "wb") as f:
        f.write(blob)
    print(f"{out}: {len(ordered)} files, {len(blob)} bytes")


def _field1(data):
    n, varint = len(data), bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        varint.append(byte | (0x80 if n else 0))
        if not n:
            break
    return b"\x0a" + bytes(varint) + data


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
