//! The client's location from the fields of `request.cf` that `js/io.js`'s `requestHead` writes
//! (tab-separated: colo, country, continent, latitude, longitude). Read as text, without the
//! workers-rs accessors that unwrap internally (`Cf::coordinates` parses with `unwrap`), so
//! missing or odd data can never panic the isolate.

use gateway_core::geo::ClientLocation;

pub fn of(line: &str) -> ClientLocation {
    if line.is_empty() {
        return ClientLocation::default();
    }
    let mut fields = line
        .split('\t')
        .map(|f| (!f.is_empty()).then(|| f.to_string()));
    let mut next = || fields.next().flatten();
    let (colo, country, continent) = (next(), next(), next());
    let (latitude, longitude) = (next(), next());
    ClientLocation::from_parts(
        colo,
        country,
        continent,
        latitude.as_deref(),
        longitude.as_deref(),
    )
}
