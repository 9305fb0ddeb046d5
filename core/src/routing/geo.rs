//! Distances on the globe, for sending a client to the nearest upstream region.
//!
//! Where the client is comes from the edge: coordinates on Cloudflare, a Fly.io region code
//! on Fly (the code of the edge that took the connection), or at worst a continent. The tables
//! here turn the codes into rough coordinates; a few hundred kilometres off does not change
//! which of a handful of regions is nearest.

/// The Earth's mean radius, in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// The great-circle distance in kilometres between two `(latitude, longitude)` points in
/// degrees (haversine formula).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    // Rounding can push `h` a hair past 1 for antipodal points, where asin has no answer.
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Fly.io regions and the coordinates of the city each is in (or next to).
const FLY_REGIONS: &[(&str, (f64, f64))] = &[
    ("ams", (52.37, 4.90)),    // Amsterdam
    ("arn", (59.33, 18.07)),   // Stockholm
    ("atl", (33.75, -84.39)),  // Atlanta
    ("bog", (4.71, -74.07)),   // Bogotá
    ("bom", (19.08, 72.88)),   // Mumbai
    ("bos", (42.36, -71.06)),  // Boston
    ("cdg", (48.86, 2.35)),    // Paris
    ("den", (39.74, -104.99)), // Denver
    ("dfw", (32.78, -96.80)),  // Dallas
    ("ewr", (40.79, -74.06)),  // Secaucus, New Jersey
    ("eze", (-34.82, -58.54)), // Ezeiza, Buenos Aires
    ("fra", (50.11, 8.68)),    // Frankfurt
    ("gdl", (20.67, -103.35)), // Guadalajara
    ("gig", (-22.91, -43.17)), // Rio de Janeiro
    ("gru", (-23.55, -46.63)), // São Paulo
    ("hkg", (22.32, 114.17)),  // Hong Kong
    ("iad", (39.04, -77.49)),  // Ashburn, Virginia
    ("jnb", (-26.20, 28.05)),  // Johannesburg
    ("lax", (34.05, -118.24)), // Los Angeles
    ("lhr", (51.51, -0.13)),   // London
    ("maa", (13.08, 80.27)),   // Chennai
    ("mad", (40.42, -3.70)),   // Madrid
    ("mia", (25.76, -80.19)),  // Miami
    ("nrt", (35.68, 139.69)),  // Tokyo
    ("ord", (41.88, -87.63)),  // Chicago
    ("otp", (44.43, 26.10)),   // Bucharest
    ("phx", (33.45, -112.07)), // Phoenix
    ("qro", (20.59, -100.39)), // Querétaro
    ("scl", (-33.45, -70.67)), // Santiago
    ("sea", (47.61, -122.33)), // Seattle
    ("sin", (1.35, 103.82)),   // Singapore
    ("sjc", (37.34, -121.89)), // San Jose, California
    ("syd", (-33.87, 151.21)), // Sydney
    ("waw", (52.23, 21.01)),   // Warsaw
    ("yul", (45.50, -73.57)),  // Montreal
    ("yyz", (43.65, -79.38)),  // Toronto
];

/// The coordinates of a Fly.io region (`iad`, `FRA`, ...), case-insensitive; `None` for a
/// code not in the built-in table.
pub fn fly_region(code: &str) -> Option<(f64, f64)> {
    let code = code.trim();
    FLY_REGIONS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(code))
        .map(|&(_, point)| point)
}

/// Rough population centres of Cloudflare's continent codes, weighted towards where the
/// people (and so the requests) are rather than the geographic middle.
const CONTINENTS: &[(&str, (f64, f64))] = &[
    ("AF", (5.0, 20.0)),      // between Lagos, Kinshasa, Cairo and Addis Ababa
    ("AN", (-77.85, 166.67)), // McMurdo Station, where most of the people are
    ("AS", (25.0, 100.0)),    // between the Indian and Chinese population masses
    ("EU", (50.0, 15.0)),     // central Europe
    ("NA", (35.0, -92.0)),    // the US population centre, pulled south by Mexico
    ("OC", (-32.0, 147.0)),   // south-eastern Australia
    ("SA", (-15.0, -55.0)),   // central Brazil
];

/// A rough population centre of a Cloudflare continent code (`AF`, `AN`, `AS`, `EU`, `NA`,
/// `OC`, `SA`), case-insensitive: only for when no finer location is known.
pub fn continent_centre(code: &str) -> Option<(f64, f64)> {
    let code = code.trim();
    CONTINENTS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(code))
        .map(|&(_, point)| point)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The design's five upstream regions.
    const SEOUL: (f64, f64) = (37.57, 126.98);
    const SINGAPORE: (f64, f64) = (1.35, 103.82);
    const SAN_FRANCISCO: (f64, f64) = (37.77, -122.42);
    const ASHBURN: (f64, f64) = (39.04, -77.49);
    const FRANKFURT: (f64, f64) = (50.11, 8.68);
    const REGIONS: [(&str, (f64, f64)); 5] = [
        ("ap-northeast", SEOUL),
        ("ap-southeast", SINGAPORE),
        ("us-west", SAN_FRANCISCO),
        ("us-east", ASHBURN),
        ("eu-central", FRANKFURT),
    ];

    fn nearest(point: (f64, f64)) -> &'static str {
        REGIONS
            .iter()
            .min_by(|a, b| distance_km(point, a.1).total_cmp(&distance_km(point, b.1)))
            .unwrap()
            .0
    }

    fn about(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance
    }

    #[test]
    fn seoul_to_singapore_is_about_4600_km() {
        let d = distance_km(SEOUL, SINGAPORE);
        assert!(about(d, 4_650.0, 100.0), "{d}");
    }

    #[test]
    fn known_distances_come_out_right() {
        // London–New York (JFK area) ≈ 5,570 km; Frankfurt–Ashburn ≈ 6,500 km.
        let london_new_york = distance_km((51.51, -0.13), (40.71, -74.01));
        assert!(about(london_new_york, 5_570.0, 30.0), "{london_new_york}");
        let d = distance_km(FRANKFURT, ASHBURN);
        assert!(about(d, 6_500.0, 100.0), "{d}");
    }

    #[test]
    fn distance_is_symmetric_and_zero_to_itself() {
        assert_eq!(distance_km(SEOUL, SEOUL), 0.0);
        let there = distance_km(SEOUL, FRANKFURT);
        let back = distance_km(FRANKFURT, SEOUL);
        assert!(about(there, back, 1e-9));
    }

    #[test]
    fn antipodes_are_half_the_circumference_not_nan() {
        let d = distance_km((0.0, 0.0), (0.0, 180.0));
        assert!(
            about(d, std::f64::consts::PI * EARTH_RADIUS_KM, 1e-6),
            "{d}"
        );
        let d = distance_km((90.0, 0.0), (-90.0, 0.0));
        assert!(d.is_finite());
    }

    #[test]
    fn longitude_wraps_around_the_date_line() {
        // Two points either side of the antimeridian are close, not half a world apart.
        let d = distance_km((0.0, 179.5), (0.0, -179.5));
        assert!(about(d, 111.2, 1.0), "{d}");
    }

    #[test]
    fn a_sydney_client_is_nearer_singapore_than_virginia() {
        let sydney = fly_region("syd").unwrap();
        assert!(distance_km(sydney, SINGAPORE) < distance_km(sydney, ASHBURN));
        assert_eq!(nearest(sydney), "ap-southeast");
    }

    #[test]
    fn new_delhi_is_nearer_singapore_than_seoul() {
        let new_delhi = (28.61, 77.21);
        assert!(distance_km(new_delhi, SINGAPORE) < distance_km(new_delhi, SEOUL));
        assert_eq!(nearest(new_delhi), "ap-southeast");
    }

    #[test]
    fn fly_regions_pick_the_expected_upstream_region() {
        for (code, region) in [
            ("iad", "us-east"),
            ("ewr", "us-east"),
            ("yyz", "us-east"),
            ("fra", "eu-central"),
            ("cdg", "eu-central"),
            ("ams", "eu-central"),
            ("lhr", "eu-central"),
            ("waw", "eu-central"),
            ("sjc", "us-west"),
            ("sea", "us-west"),
            ("lax", "us-west"),
            ("nrt", "ap-northeast"),
            ("hkg", "ap-northeast"),
            ("bom", "ap-southeast"),
            ("sin", "ap-southeast"),
            ("syd", "ap-southeast"),
        ] {
            assert_eq!(nearest(fly_region(code).unwrap()), region, "{code}");
        }
    }

    #[test]
    fn every_listed_fly_region_is_known() {
        for code in [
            "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra",
            "gdl", "gig", "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord",
            "otp", "phx", "qro", "scl", "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
        ] {
            assert!(fly_region(code).is_some(), "{code}");
        }
    }

    #[test]
    fn fly_region_codes_are_case_insensitive_and_unknown_ones_are_none() {
        assert_eq!(fly_region("IAD"), fly_region("iad"));
        assert_eq!(fly_region("Fra"), Some((50.11, 8.68)));
        assert_eq!(fly_region(" sin "), Some((1.35, 103.82)));
        assert_eq!(fly_region("xyz"), None);
        assert_eq!(fly_region(""), None);
        assert_eq!(fly_region("iadx"), None);
    }

    #[test]
    fn the_tables_hold_valid_unique_coordinates() {
        for table in [FLY_REGIONS, CONTINENTS] {
            for (i, (code, (lat, lon))) in table.iter().enumerate() {
                assert!(lat.abs() <= 90.0 && lon.abs() <= 180.0, "{code}");
                assert!(
                    table.iter().skip(i + 1).all(|(other, _)| other != code),
                    "{code} twice"
                );
            }
        }
    }

    #[test]
    fn continents_have_centres_and_map_to_a_sensible_region() {
        for code in ["AF", "AN", "AS", "EU", "NA", "OC", "SA"] {
            assert!(continent_centre(code).is_some(), "{code}");
        }
        assert_eq!(continent_centre("eu"), continent_centre("EU"));
        assert_eq!(continent_centre("XX"), None);
        assert_eq!(continent_centre(""), None);
        assert_eq!(nearest(continent_centre("EU").unwrap()), "eu-central");
        assert_eq!(nearest(continent_centre("AF").unwrap()), "eu-central");
        assert_eq!(nearest(continent_centre("NA").unwrap()), "us-east");
        assert_eq!(nearest(continent_centre("SA").unwrap()), "us-east");
        assert_eq!(nearest(continent_centre("OC").unwrap()), "ap-southeast");
        let asia = continent_centre("AS").unwrap();
        assert!(["ap-southeast", "ap-northeast"].contains(&nearest(asia)));
    }
}
