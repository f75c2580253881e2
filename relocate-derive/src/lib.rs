//! `#[derive(Relocatable)]` for relocate-api (re-exported there as `relocate_api::Relocatable`).
//!
//! `Relocatable` is an `unsafe` trait: a type may be copied to a new address while shared references
//! to the old copy exist only if nothing can change it through `&T` and a bitwise copy is a valid
//! value. Both hold for a struct or enum whose every field's type is `Relocatable` (a shared
//! reference to the whole reaches its fields only through shared references, and the fields'
//! contracts cover what they own), which is what the derive checks, so a user needs no `unsafe`:
//!
//! - the impl requires every type parameter to be `Relocatable`;
//! - a function the compiler checks but never calls names every field's type with a
//!   `Relocatable` bound, under those same requirements, so a field that does not qualify (a
//!   `Cell`, an atomic, a raw pointer) is a compile error at the derive.
//!
//! Unions are refused: which field is live is not known, so no field's contract can be relied on.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{parse_macro_input, parse_quote, Data, DeriveInput, Fields, GenericParam};

/// Implements `relocate_api::Relocatable` for a struct or enum whose fields all implement it.
#[proc_macro_derive(Relocatable)]
pub fn derive_relocatable(input: TokenStream) -> TokenStream {
    let mut input = parse_macro_input!(input as DeriveInput);
    let fields: Vec<&Fields> = match &input.data {
        Data::Struct(data) => vec![&data.fields],
        Data::Enum(data) => data.variants.iter().map(|v| &v.fields).collect(),
        Data::Union(data) => {
            return syn::Error::new(
                data.union_token.span,
                "Relocatable cannot be derived for a union: which field is live is not known",
            )
            .to_compile_error()
            .into();
        }
    };
    let field_types: Vec<&syn::Type> = fields
        .iter()
        .flat_map(|fields| fields.iter().map(|field| &field.ty))
        .collect();
    for param in &mut input.generics.params {
        if let GenericParam::Type(param) = param {
            param.bounds.push(parse_quote!(::relocate_api::Relocatable));
        }
    }
    let name = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let checks: Tokens = field_types
        .iter()
        .map(|ty| quote! { relocatable::<#ty>(); })
        .collect();
    quote! {
        const _: () = {
            // Never called: it compiles only if every field's type is `Relocatable` whenever the
            // impl below applies.
            #[allow(dead_code, clippy::extra_unused_type_parameters)]
            fn fields_are_relocatable #impl_generics () #where_clause {
                fn relocatable<F: ::relocate_api::Relocatable + ?Sized>() {}
                #checks
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
