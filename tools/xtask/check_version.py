#!/usr/bin/env python3
"""check_version.py: an independent reader of the version resource xtask links into the image.

Reads the linked image with pefile (not with the Rust code that wrote the resource), and checks
that its VS_VERSIONINFO gives the expected file and product version, both in VS_FIXEDFILEINFO
and as strings, names the image as OriginalFilename, marks it a system driver, carries every
string Windows shows in the file's properties, and lists US English / Unicode as its
translation. Exits 1 naming the first problem.

usage: check_version.py IMAGE VERSION ORIGINAL_FILENAME
  VERSION  four parts, a.b.c.d
"""

import sys

import pefile

VFT_DRV = 3
VFT2_DRV_SYSTEM = 7
STRINGS = (
    "CompanyName",
    "FileDescription",
    "FileVersion",
    "InternalName",
    "LegalCopyright",
    "OriginalFilename",
    "ProductName",
    "ProductVersion",
)


def fail(message):
    print(f"check_version: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 4:
        fail(__doc__)
    image, version, original = sys.argv[1:]
    parts = [int(part) for part in version.split(".")]
    if len(parts) != 4:
        fail(f"version {version} is not four parts")
    ms, ls = (parts[0] << 16) | parts[1], (parts[2] << 16) | parts[3]
    pe = pefile.PE(image, fast_load=True)
    pe.parse_data_directories(
        directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"]]
    )
    if not getattr(pe, "VS_FIXEDFILEINFO", None):
        fail(f"{image} has no VS_VERSIONINFO resource")
    fixed = pe.VS_FIXEDFILEINFO[0]
    if fixed.Signature != 0xFEEF04BD:
        fail(f"VS_FIXEDFILEINFO signature {fixed.Signature:#x}")
    for name, found in (
        ("file version", (fixed.FileVersionMS, fixed.FileVersionLS)),
        ("product version", (fixed.ProductVersionMS, fixed.ProductVersionLS)),
    ):
        if found != (ms, ls):
            fail(f"{name} is {found[0]:#x}.{found[1]:#x}, expected {ms:#x}.{ls:#x}")
    if (fixed.FileType, fixed.FileSubtype) != (VFT_DRV, VFT2_DRV_SYSTEM):
        fail(f"file type {fixed.FileType}/{fixed.FileSubtype}, not a system driver (3/7)")
    strings, translations = None, None
    for info in pe.FileInfo[0]:
        if info.Key == b"StringFileInfo":
            tables = info.StringTable
            if len(tables) != 1 or tables[0].LangID != b"040904B0":
                fail(f"string tables {[t.LangID for t in tables]}, expected one 040904B0")
            strings = {k.decode(): v.decode() for k, v in tables[0].entries.items()}
        elif info.Key == b"VarFileInfo":
            translations = [var.entry.get(b"Translation") for var in info.Var]
    if strings is None:
        fail("no StringFileInfo")
    missing = [name for name in STRINGS if not strings.get(name)]
    if missing:
        fail(f"strings missing or empty: {', '.join(missing)}")
    for name, expected in (
        ("FileVersion", version),
        ("ProductVersion", version),
        ("OriginalFilename", original),
    ):
        if strings[name] != expected:
            fail(f"{name} is {strings[name]!r}, expected {expected!r}")
    if translations != ["0x0409 0x04b0"]:
        fail(f"translations {translations}, expected US English / Unicode (0x0409 0x04b0)")
    print(
        f"check_version: {image}: {strings['FileDescription']} {version}, "
        f"OriginalFilename {original}"
    )


if __name__ == "__main__":
    main()
