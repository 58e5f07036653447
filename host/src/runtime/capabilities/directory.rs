use crate::model::call;
use crate::runtime::bindings::v0_2::portcullis::rule::directory::Host;
use crate::runtime::bindings::wit;
use crate::runtime::sandbox::RuleState;

impl Host for RuleState {
    fn find_by_email(
        &mut self,
        email: String,
    ) -> wasmtime::Result<Result<Vec<wit::User>, wit::CapabilityError>> {
        self.check_deadline(call::FIND_BY_EMAIL)?;
        Ok(match self.services.directory.find_by_email(&email) {
            Ok(users) => Ok(users.iter().map(|u| u.to_wit()).collect()),
            Err(e) => Err(self.capability_error(call::FIND_BY_EMAIL, e)),
        })
    }

    fn get_user(
        &mut self,
        id: String,
    ) -> wasmtime::Result<Result<Option<wit::User>, wit::CapabilityError>> {
        self.check_deadline(call::GET_USER)?;
        Ok(match self.services.directory.get_user(&id) {
            Ok(user) => Ok(user.map(|u| u.to_wit())),
            Err(e) => Err(self.capability_error(call::GET_USER, e)),
        })
    }

    fn verify_password(
        &mut self,
        user_id: String,
    ) -> wasmtime::Result<Result<bool, wit::CapabilityError>> {
        let answer = self.check_password(call::DIRECTORY_VERIFY_PASSWORD, |state, password| {
            state.services.directory.verify_password(&user_id, password)
        })?;
        if matches!(answer, Ok(true)) {
            self.evidence.directory_password_verified = true;
            self.evidence.directory_password_user = Some(user_id.clone());
        }
        Ok(answer)
    }
}
