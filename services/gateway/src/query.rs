//! Reading query strings: each parameter at most once, and every problem an
//! enveloped 400 that names the parameter.

use crate::reply::Failure;
use axum::extract::Query;
use axum::http::Uri;
use serde::de::DeserializeOwned;

/// The decoded parameters of `uri`'s query, in order. A parameter given twice
/// is refused, naming it: which of the two values the caller meant cannot be
/// known (the same rule as a key repeated in a JSON body).
pub(crate) fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, Failure> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|_| Failure::bad_request("The query string is not valid"))?;
    for (index, (name, _)) in pairs.iter().enumerate() {
        if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
            return Err(Failure::bad_request(format!(
                "The query parameter {} is given more than once",
                presence_domain::inventory::echo(name)
            )));
        }
    }
    Ok(pairs)
}

/// The query of `uri` read into `T`, after [`query_pairs`]' checks.
pub(crate) fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, Failure> {
    query_pairs(uri)?;
    Query::<T>::try_from_uri(uri)
        .map(|Query(query)| query)
        .map_err(|rejection| {
            Failure::bad_request(format!(
                "The query string is not valid: {}",
                rejection.body_text()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_given_twice_is_refused_by_name() {
        let uri: Uri = "/x?venue=V&mac=1&mac=2".parse().unwrap();
        assert_eq!(
            query_pairs(&uri),
            Err(Failure::bad_request(
                "The query parameter mac is given more than once"
            ))
        );
        let uri: Uri = "/x?venue=V&mac=1".parse().unwrap();
        assert_eq!(query_pairs(&uri).unwrap().len(), 2);
        let uri: Uri = "/x".parse().unwrap();
        assert!(query_pairs(&uri).unwrap().is_empty());
    }
}
