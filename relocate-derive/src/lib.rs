//! `#[derive(Relocatable)]` for relocate-api (re-exported there as `relocate_api::Relocatable`).
//!
//! `Relocatable` is an `unsafe` trait: a type may be copied to a new address while shared references
//! to the old copy exist only if nothing can change it through `&T` and a bitwise copy is a valid
//! value. Both hold for a struct or enum whose every field's type is `Relocatable` (a shared
//! reference to the whole reaches its fields only through shared references, and the fields'
//! contracts cover what they own), which is what the derive checks, so a user needs no `unsafe`:
//!
//! - the impl requires every type parameter to be `Relocatable`;
//! - a function the compiler checks but never calls destructures a `&Self` exhaustively (every
//!   field of a struct, every variant of an enum, no `..`) and requires `Relocatable` of each field
//!   it binds, under those same requirements. The field types are the compiler's, taken from the
//!   type as finally defined, not the tokens the derive saw: an attribute macro expanded after the
//!   derive could otherwise change a field's type behind its back (one that turned a `u64` into an
//!   `AtomicU64` did, in a review), and a field it added or renamed fails the pattern. So a field
//!   that does not qualify (a `Cell`, an atomic, a raw pointer) is a compile error at the derive.
//!
//! Unions are refused: which field is live is not known, so no field's contract can be relied on.
//! Packed structs are refused too (a reference to a packed field is not allowed): implement the
//! trait by hand for those.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{parse_macro_input, parse_quote, Data, DeriveInput, Fields, GenericParam, Ident, Index};

/// Implements `relocate_api::Relocatable` for a struct or enum whose fields all implement it.
#[proc_macro_derive(Relocatable)]
pub fn derive_relocatable(input: TokenStream) -> TokenStream {
    let mut input = parse_macro_input!(input as DeriveInput);
    let name = input.ident.clone();
    // One arm per variant (a struct is one), each binding every field to a reference.
    let arms: Vec<Tokens> = match &input.data {
        Data::Struct(data) => vec![arm(quote!(#name), &data.fields)],
        Data::Enum(data) => data
            .variants
            .iter()
            .map(|variant| {
                let variant_name = &variant.ident;
                arm(quote!(#name::#variant_name), &variant.fields)
            })
            .collect(),
        Data::Union(data) => {
            return syn::Error::new(
                data.union_token.span,
                "Relocatable cannot be derived for a union: which field is live is not known",
            )
            .to_compile_error()
            .into();
        }
    };
    for param in &mut input.generics.params {
        if let GenericParam::Type(param) = param {
            param.bounds.push(parse_quote!(::relocate_api::Relocatable));
        }
    }
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let check = if arms.is_empty() {
        // An enum without variants: there is no value, and no field.
        quote!(match *value {})
    } else {
        quote!(match value { #(#arms)* })
    };
    quote! {
        const _: () = {
            // Never called: it compiles only if every field of the type, as finally defined, is
            // `Relocatable` whenever the impl below applies.
            #[allow(dead_code, clippy::extra_unused_type_parameters)]
            fn fields_are_relocatable #impl_generics (value: &#name #type_generics) #where_clause {
                fn relocatable<F: ::relocate_api::Relocatable + ?Sized>(_: &F) {}
                #check
            }
            // SAFETY: every field's type is `Relocatable` under the impl's bounds (checked above):
            // a shared reference to the value reaches its fields by shared references only, so no
            // interior mutability, and a bitwise copy of the fields is a bitwise copy of the value.
            unsafe impl #impl_generics ::relocate_api::Relocatable for #name #type_generics
                #where_clause {}
        };
    }
    .into()
}

/// A match arm for `path` (a struct or one of an enum's variants) with `fields`, binding every
/// field (no `..`) and checking each. The pattern is braced whatever the shape (`S {}`,
/// `S { 0: field_0 }`): a bare `S` would be read as a fresh binding, matching anything, if the type
/// as finally defined were no longer a unit struct (a review found that hole), where a braced
/// pattern must name every field of whatever the type became.
fn arm(path: Tokens, fields: &Fields) -> Tokens {
    let bindings: Vec<Ident> = (0..fields.len())
        .map(|i| format_ident!("field_{}", i))
        .collect();
    let members: Vec<Tokens> = match fields {
        Fields::Named(named) => named
            .named
            .iter()
            .map(|field| {
                let name = &field.ident;
                quote!(#name)
            })
            .collect(),
        Fields::Unnamed(_) | Fields::Unit => (0..fields.len())
            .map(|i| {
                let index = Index::from(i);
                quote!(#index)
            })
            .collect(),
    };
    let pattern = quote!(#path { #(#members: #bindings),* });
    quote! {
        #pattern => {
            #(relocatable(#bindings);)*
        }
    }
}
