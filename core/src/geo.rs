//! Where a client is, as far as the edge knows (Cloudflare's `request.cf`). Every field is
//! optional: local runs and some requests carry none of it.

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientLocation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
}

impl ClientLocation {
    /// Builds a location from the raw strings the platform gives, dropping what does not parse.
    pub fn from_parts(
        colo: Option<String>,
        country: Option<String>,
        continent: Option<String>,
        latitude: Option<&str>,
        longitude: Option<&str>,
    ) -> ClientLocation {
        let coord = |s: Option<&str>, bound: f64| {
            s.and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && v.abs() <= bound)
        };
        let nonempty = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
        let latitude = coord(latitude, 90.0);
        let longitude = coord(longitude, 180.0);
        // A coordinate is only useful as a pair.
        let (latitude, longitude) = match (latitude, longitude) {
            (Some(a), Some(b)) => (Some(a), Some(b)),
            _ => (None, None),
        };
        ClientLocation {
            colo: nonempty(colo),
            country: nonempty(country),
            continent: nonempty(continent),
            latitude,
            longitude,
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &ClientLocation::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_or_garbage_coordinates_are_dropped_not_fatal() {
        let l = ClientLocation::from_parts(
            Some("AMS".into()),
            None,
            Some("".into()),
            Some("52.3"),
            None,
        );
        assert_eq!(l.colo.as_deref(), Some("AMS"));
        assert_eq!(l.continent, None);
        assert_eq!(l.latitude, None);
        let l = ClientLocation::from_parts(None, None, None, Some("NaN"), Some("4.9"));
        assert!(l.is_empty());
        let l = ClientLocation::from_parts(None, None, None, Some("52.3"), Some("4.9"));
        assert_eq!((l.latitude, l.longitude), (Some(52.3), Some(4.9)));
    }
}
