//! Sample documents for demos and tests: a real two-page invoice PDF (made
//! with lopdf, standard Helvetica font, Info metadata, a table) and an
//! invoices CSV.

use lopdf::{
    Dictionary, Document, Object, Stream,
    content::{Content, Operation},
    dictionary,
};

/// A two-page invoice: number, dates, a table of items and a total.
pub fn invoice_pdf() -> Vec<u8> {
    pdf(
        "Invoice INV-2026-0042",
        &[
            &[
                "ACME Supplies Ltd",
                "Invoice INV-2026-0042",
                "Date: 2026-01-31",
                "Due: 2026-02-28",
                "Item      Qty      Amount",
                "Paper A4      10      45.00",
                "Toner      2      120.50",
                "Stapler      1      15.25",
            ],
            &["Notes: payable by bank transfer", "Total: 180.75 EUR"],
        ],
    )
}

/// A PDF with `pages`, one text line per entry, and `title` in its Info.
pub fn pdf(title: &str, pages: &[&[&str]]) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let mut kids = Vec::new();
    for lines in pages {
        let mut operations = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            operations.push(Operation::new("BT", vec![]));
            operations.push(Operation::new("Tf", vec!["F1".into(), 11.into()]));
            operations.push(Operation::new(
                "Td",
                vec![60.into(), (780 - 18 * i as i64).into()],
            ));
            operations.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
            operations.push(Operation::new("ET", vec![]));
        }
        let content = Content { operations }.encode().unwrap_or_default();
        let content_id = doc.add_object(Stream::new(Dictionary::new(), content));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
        });
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => count,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    let info_id = doc.add_object(dictionary! {
        "Title" => Object::string_literal(title),
        "Author" => Object::string_literal("ACME Supplies Ltd"),
        "Creator" => Object::string_literal("resource-broker samples"),
        "CreationDate" => Object::string_literal("D:20260131120000Z"),
    });
    doc.trailer.set("Root", catalog_id);
    doc.trailer.set("Info", info_id);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes)
        .expect("writing to memory cannot fail");
    bytes
}

/// An invoices CSV: ids, customers, amounts, dates and a paid flag.
pub fn invoices_csv() -> Vec<u8> {
    b"invoice_id,customer,amount,issue_date,paid\n\
      INV-001,ACME Supplies,1250.00,2026-01-05,true\n\
      INV-002,Globex,89.90,2026-01-12,false\n\
      INV-003,Initech,430.15,2026-01-20,true\n\
      INV-004,Umbrella,15.00,2026-01-28,false\n"
        .to_vec()
}

/// The first bytes of a PDF followed by nonsense: extraction must fail cleanly.
pub fn corrupt_pdf() -> Vec<u8> {
    let mut bytes = invoice_pdf();
    bytes.truncate(120);
    bytes.extend_from_slice(b"\x00\x01garbage without xref");
    bytes
}

#[cfg(test)]
mod tests {
    use super::super::{DocumentType, ExtractError, extract};
    use super::*;

    #[test]
    fn the_sample_invoice_extracts_fully() {
        let e = extract("incoming/invoice.pdf", "application/pdf", &invoice_pdf()).unwrap();
        assert_eq!(e.document_type, DocumentType::Pdf);
        let d = &e.data;
        assert_eq!(d["page_count"], 2);
        assert_eq!(d["metadata"]["title"], "Invoice INV-2026-0042");
        assert_eq!(d["metadata"]["author"], "ACME Supplies Ltd");
        assert!(
            d["pages"][0]["text"].as_str().unwrap().contains("Paper A4"),
            "{d}"
        );
        assert_eq!(
            d["tables"][0]["rows"][0],
            serde_json::json!(["Item", "Qty", "Amount"])
        );
        assert_eq!(
            d["tables"][0]["rows"][2],
            serde_json::json!(["Toner", "2", "120.50"])
        );
        assert_eq!(d["fields"]["invoice_number"], "INV-2026-0042");
        assert_eq!(
            d["fields"]["dates"],
            serde_json::json!(["2026-01-31", "2026-02-28"])
        );
        assert_eq!(d["fields"]["total"], "180.75");
    }

    #[test]
    fn a_corrupt_pdf_is_an_error() {
        let err = extract("x.pdf", "application/pdf", &corrupt_pdf()).unwrap_err();
        assert!(matches!(err, ExtractError::Corrupt(_)), "{err}");
    }
}
