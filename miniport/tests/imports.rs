//! Every routine `storport::functions` imports is a storport.sys export: an import of any other
//! name (an inline WDK wrapper such as `StorPortInitializePerfOpts`) would stop the driver from
//! loading. The export list is the one the PE check uses.

#[path = "../../tools/pecheck/src/storport_exports.rs"]
mod storport_exports;

/// The names declared with `pub fn` in the bindings' extern blocks.
fn declared_imports() -> Vec<&'static str> {
    let source = include_str!("../src/storport/functions.rs");
    let (_, externs) = source
        .split_once("unsafe extern \"system\" {")
        .expect("the fixed-argument extern block");
    externs
        .split("pub fn ")
        .skip(1)
        .map(|rest| {
            rest.split('(')
                .next()
                .expect("a name before the parameter list")
        })
        .collect()
}

#[test]
fn every_declared_routine_is_a_storport_export() {
    let names = declared_imports();
    // The bindings declare the routines the brief lists, variadic hubs included.
    assert!(
        names.len() >= 35,
        "only {} routines found: {names:?}",
        names.len()
    );
    for variadic in [
        "StorPortNotification",
        "StorPortExtendedFunction",
        "StorPortDebugPrint",
    ] {
        assert!(names.contains(&variadic), "{variadic} not declared");
    }
    let missing: Vec<_> = names
        .iter()
        .filter(|name| !storport_exports::is_storport_export(name))
        .collect();
    assert!(missing.is_empty(), "not storport.sys exports: {missing:?}");
}

#[test]
fn the_check_rejects_an_inline_wrapper() {
    // The control: names the WDK defines inline are not exports.
    for wrapper in [
        "StorPortInitializePerfOpts",
        "StorPortAcquireSpinLock",
        "StorPortIssueDpc",
        "StorPortGetMSIInfo",
    ] {
        assert!(!storport_exports::is_storport_export(wrapper), "{wrapper}");
    }
}
